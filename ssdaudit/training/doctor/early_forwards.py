"""The record of eval-mode forwards that used lazily initialised state (T023's evidence) before any watch existed.

``ssdaudit watch`` builds a ``Watch`` when the script builds its optimizer; a script that evaluates its model first
(a GAN critic with ``spectral_norm``, a flow with ActNorm, validated before training) ran that forward unwatched.
``record_early_forwards()`` puts a global forward pre-hook and post-hook in place (run outside ``torch.compile``;
a module in train mode returns at once) that probe every eval-mode forward as ``LazyStateInEval`` does, and keep
what they found, by weak reference, in a deque of ``KEPT`` entries; ``recent_early_forwards()`` is what a watch
reads when it attaches. The runner holds the record from before the script's first line until its first watch
attaches (the watch's own check follows later forwards). Importing this module patches nothing.
"""

from __future__ import annotations

import collections
import threading
import weakref
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from ssdaudit.core import patches
from ssdaudit.core.guard import guarded
from ssdaudit.training.doctor.checks.lazy_state import LazyStateProbe

KEPT = 64
_found: collections.deque[tuple[weakref.ref[nn.Module], str]] = collections.deque(maxlen=KEPT)
_LOCK = threading.Lock()


class EarlyForwards:
    """The hooks of one record; ``release()`` removes them (once; later calls do nothing)."""

    def __init__(self) -> None:
        self.probe = LazyStateProbe()
        self._handles: list[RemovableHandle] = [
            nn.modules.module.register_module_forward_pre_hook(patches.compile_disabled(self._pre)),
            nn.modules.module.register_module_forward_hook(patches.compile_disabled(self._post))]

    def _pre(self, module: nn.Module, _args: Any) -> None:
        if module.training:
            return
        with guarded("early forward record"):
            for what in self.probe.pre(module):
                _keep(module, what)

    def _post(self, module: nn.Module, _args: Any, _output: Any) -> None:
        if not self.probe.open:
            return
        with guarded("early forward record"):
            what = self.probe.post(module)
            if what is not None:
                _keep(module, what)

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def release(self) -> None:
        while self._handles:
            self._handles.pop().remove()


def _keep(module: nn.Module, what: str) -> None:
    with _LOCK:
        if not any(ref() is module and w == what for ref, w in _found):
            _found.append((weakref.ref(module), what))


def record_early_forwards() -> EarlyForwards:
    """Record, from now on, eval-mode forwards that use uninitialised lazy state; returns the record, whose
    ``release()`` ends it (what it found stays readable)."""
    return EarlyForwards()


def recent_early_forwards() -> list[tuple[nn.Module, str]]:
    """(module, what was found) of the recorded forwards whose modules are alive, oldest first."""
    with _LOCK:
        alive = [(ref(), what) for ref, what in _found]
    return [(m, w) for m, w in alive if m is not None]


def clear_early_forwards() -> None:
    """Forget what was recorded (a new run in this process)."""
    with _LOCK:
        _found.clear()
