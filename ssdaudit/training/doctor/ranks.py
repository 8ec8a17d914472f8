"""``RankBoard``: the one place where the doctor talks across ranks.

The doctor never issues a collective on the user's process group: a collective that one rank issues and another
does not (a doctor attached on rank 0 only, a rank that crashed) meets the program's own collective on the other
rank and aborts or hangs the job. Cross-rank evidence goes instead through the job's key-value store, the one the
default process group was initialised with, under a per-watch prefix (``ssdaudit/<restart>/<watch number>/``):

* every watching rank *posts* small JSON records (``set``: never waits for another rank);
* rank 0 *collects* what is there, polling ``check`` (which never blocks) for at most a short wait, and notes the
  ranks that posted nothing (not watched, crashed or late) instead of waiting for them.

Any error of the store (a server that went away with a crashed rank) closes the board for the rest of the run: the
doctor then judges from local evidence only.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

import torch

# How long rank 0 waits, in all, for records another rank has not posted yet (seconds).
WAIT_S = 2.0
_POLL_S = 0.02
_numbers = itertools.count(1)  # the n-th board of this process: equal across ranks that build watches alike


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when torch.distributed is not initialised."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _default_store() -> Any:
    """The key-value store of the default process group (torchrun's agent store, or the TCPStore / FileStore of
    ``init_process_group``), or None."""
    from torch.distributed import distributed_c10d as c10d

    get = getattr(c10d, "_get_default_store", None)
    if get is not None:
        try:
            return get()
        except Exception:
            pass
    try:  # older layouts: the group map holds (backend, store)
        group = c10d._get_default_group()
        return c10d._world.pg_map[group][1]
    except Exception:
        return None


class RankBoard:
    """Posts this rank's records and, on rank 0, collects every rank's. Build with ``RankBoard.open()``."""

    def __init__(self, store: Any, rank: int, size: int) -> None:
        self.store = store
        self.rank = rank
        self.size = size
        self.closed = False
        self.error = ""  # why the board closed (a store error), for the report's notes
        self.silent: set[int] = set()  # ranks that posted nothing within the wait: never waited for again

    @classmethod
    def open(cls) -> "RankBoard | None":
        """A board under a fresh per-watch prefix, or None when the run is not distributed (world size 1, no
        process group) or its store cannot be found."""
        rank, size = world()
        if size < 2:
            return None
        store = _default_store()
        if store is None:
            return None
        from torch.distributed import PrefixStore  # type: ignore[attr-defined]

        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        prefix = f"ssdaudit/{restart}/{next(_numbers)}/"
        return cls(PrefixStore(prefix, store), rank, size)

    @torch.compiler.disable  # type: ignore[untyped-decorator]
    def post(self, key: str, value: Any) -> None:
        """Publish ``value`` (JSON-able) as this rank's ``key``; overwrites an earlier post of the same key."""
        if self.closed:
            return
        try:
            self.store.set(f"{key}/{self.rank}", json.dumps(value))
        except Exception as exc:  # the store is gone (its host crashed): judge locally from now on
            self._close(exc)

    @torch.compiler.disable  # type: ignore[untyped-decorator]
    def collect(self, key: str, wait_s: float = WAIT_S) -> dict[int, Any]:
        """Every rank's ``key`` that is posted within ``wait_s`` seconds (this rank's included), by rank. Ranks that
        post nothing in time are remembered in ``silent`` and not waited for again. Never raises."""
        if self.closed:
            return {}
        found: dict[int, Any] = {}
        deadline = time.monotonic() + wait_s
        pending = list(range(self.size))
        try:
            while True:
                for r in list(pending):
                    name = f"{key}/{r}"
                    if self.store.check([name]):  # check never blocks; get would wait for the key
                        found[r] = json.loads(self.store.get(name))
                        pending.remove(r)
                waiting = [r for r in pending if r not in self.silent]
                if not waiting or time.monotonic() >= deadline:
                    break
                time.sleep(_POLL_S)
        except Exception as exc:
            self._close(exc)
        self.silent.update(r for r in pending if r != self.rank)
        return found

    def _close(self, exc: BaseException) -> None:
        self.closed = True
        self.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
