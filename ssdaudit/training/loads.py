"""The record of ``Module.load_state_dict(strict=False)`` calls, kept from the moment torch and ssdaudit are both
imported (``import ssdaudit`` arranges it): a script that loads its pretrained weights, then builds the optimizer and
``ssdaudit.watch``, still has that load judged (T016; ``Watch.attach`` replays the loads into modules of its model).

``nn.Module.load_state_dict`` is wrapped once, for the life of the process: a strict=False call appends a weak
reference to the module and its result to a deque of ``KEPT`` entries and calls the ``observers`` (the training
doctor's taps); every other call goes straight through. Importing this module imports torch and nothing of ssdaudit.
"""

from __future__ import annotations

import collections
import functools
import weakref
from collections.abc import Callable
from typing import Any

from torch import nn

KEPT = 32
loads: collections.deque[tuple[weakref.ref[nn.Module], Any]] = collections.deque(maxlen=KEPT)
# called as observer(module, strict, result) after every strict=False load
observers: list[Callable[[nn.Module, bool, Any], None]] = []


def _load(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(self: nn.Module, state_dict: Any, strict: bool = True, *args: Any, **kwargs: Any) -> Any:
        result = original(self, state_dict, strict, *args, **kwargs)
        if not strict:
            loads.append((weakref.ref(self), result))
            for observe in list(observers):
                observe(self, bool(strict), result)
        return result

    wrapper.__ssdaudit_load_tap__ = True  # type: ignore[attr-defined]
    return wrapper


def recent_loads() -> list[tuple[nn.Module, Any]]:
    """The recorded ``load_state_dict(strict=False)`` calls whose modules are alive: (module, result), oldest first."""
    alive = [(ref(), result) for ref, result in loads]
    return [(m, r) for m, r in alive if m is not None]


def record_loads() -> None:
    """Wrap ``nn.Module.load_state_dict`` (once per process; later calls do nothing)."""
    if not getattr(nn.Module.load_state_dict, "__ssdaudit_load_tap__", False):
        nn.Module.load_state_dict = _load(nn.Module.load_state_dict)  # type: ignore[method-assign]


record_loads()
