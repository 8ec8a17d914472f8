"""Bugs of ours never reach the user's code: ``guarded`` runs a piece of ssdaudit's code inside the user's process
(a hook, a tap, a check) and turns an exception into a note, except under the test suite.

``SSDAUDIT_RAISE_INTERNAL=1`` (set by the tests) makes every guarded exception propagate instead, so that our bugs
fail tests. Imports nothing beyond the standard library.
"""

from __future__ import annotations

import collections
import contextlib
import os
import traceback
from collections.abc import Iterator, MutableSequence

# notes of internal errors no watch owns (a process-wide tap): ``(what, first line)``, the latest kept
stray: collections.deque[str] = collections.deque(maxlen=32)


def raise_internal() -> bool:
    """Whether a failing check propagates its exception (``SSDAUDIT_RAISE_INTERNAL=1``, set by the tests) instead
    of being recorded: a bug of ours must never break the user's training."""
    return os.environ.get("SSDAUDIT_RAISE_INTERNAL", "") not in ("", "0")


def describe(what: str, exc: BaseException) -> str:
    """The note of an internal error: ``what: ValueError('...')`` then the traceback (first line shown)."""
    return f"{what}: {exc!r}\n{''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))}"


@contextlib.contextmanager
def guarded(what: str, notes: MutableSequence[str] | None = None) -> Iterator[None]:
    """Run the block; an ``Exception`` from it is recorded in ``notes`` (default ``stray``) as ``describe(what,
    exc)`` and swallowed, or re-raised under ``SSDAUDIT_RAISE_INTERNAL=1``. ``BaseException`` (KeyboardInterrupt,
    the runner's stop) passes through."""
    try:
        yield
    except Exception as exc:
        if raise_internal():
            raise
        (stray if notes is None else notes).append(describe(what, exc))
