"""The record of ``Module.load_state_dict(strict=False)`` calls, so that the training doctor's T016 also judges a
load made before ``watch(...)`` (load the pretrained weights, build the optimizer, then watch).

Nothing is recorded until someone asks: ``record_loads()`` (public as ``ssdaudit.record_loads``) wraps
``nn.Module.load_state_dict`` through the patch owner (``ssdaudit.core.patches``) and returns the handle that
ends the record; every ``Watch`` holds one while attached, and ``ssdaudit watch`` holds one from before the user's
script runs (so it sees loads made from ``import torch`` on). While recorded, a strict=False call appends a weak
reference to the module and its result to a deque of ``KEPT`` entries and calls the ``observers`` (the doctor's
taps); every other call goes straight through. Importing this module imports torch and patches nothing.
"""

from __future__ import annotations

import collections
import functools
import weakref
from collections.abc import Callable
from typing import Any

from torch import nn

from ssdaudit.core import patches
from ssdaudit.core.guard import guarded

KEPT = 32
loads: collections.deque[tuple[weakref.ref[nn.Module], Any]] = collections.deque(maxlen=KEPT)
# called as observer(module, strict, result) after every strict=False load
observers: list[Callable[[nn.Module, bool, Any], None]] = []

patches.register("torch.nn.modules.module.Module", "load_state_dict")


def _layer(call_next: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call_next)
    def load_state_dict(self: nn.Module, state_dict: Any, strict: bool = True, *args: Any, **kwargs: Any) -> Any:
        result = call_next(self, state_dict, strict, *args, **kwargs)
        if not strict:
            with guarded("load record"):
                loads.append((weakref.ref(self), result))
                for observe in list(observers):
                    observe(self, bool(strict), result)
        return result

    return load_state_dict


def recent_loads() -> list[tuple[nn.Module, Any]]:
    """The recorded ``load_state_dict(strict=False)`` calls whose modules are alive: (module, result), oldest first."""
    alive = [(ref(), result) for ref, result in loads]
    return [(m, r) for m, r in alive if m is not None]


def record_loads() -> patches.Handle:
    """Record ``load_state_dict(strict=False)`` calls from now on, for a later ``ssdaudit.watch`` to judge (T016):
    call it before loading pretrained weights when the watch starts after the load. Returns the handle whose
    ``release()`` ends the record (reference-counted with the doctor's own; also a context manager)."""
    return patches.patch(nn.Module, "load_state_dict", _layer, key="ssdaudit.loads")
