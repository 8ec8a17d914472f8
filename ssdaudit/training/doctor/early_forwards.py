"""The record of eval-mode forwards that used lazily initialised state (T023's evidence) before any watch existed.

``ssdaudit watch`` builds a ``Watch`` when the script builds its optimizer; a script that evaluates its model first
(a GAN critic with ``spectral_norm``, a flow with ActNorm, validated before training) ran that forward unwatched.
``record_early_forwards()`` puts a global forward pre-hook and post-hook in place (run outside ``torch.compile``;
a module in train mode returns at once) that probe every eval-mode forward (``LazyStateProbe``, which the check
``LazyStateInEval`` uses too), and keep
what they found, by weak reference, in a deque of ``KEPT`` entries; ``recent_early_forwards()`` is what a watch
reads when it attaches. The runner holds the record from before the script's first line until its first watch
attaches (the watch's own check follows later forwards). Importing this module patches nothing.
"""

from __future__ import annotations

import collections
import threading
import weakref
from typing import Any

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.utils.hooks import RemovableHandle

from ssdaudit.core import patches
from ssdaudit.core.guard import guarded

FLAG_WORDS = ("initialized", "initialised", "inited", "is_init", "data_init")


def _flag_names(module: nn.Module) -> tuple[list[str], list[str]]:
    """(bool attributes, one-element buffers) whose names say "initialised"."""
    attrs = [k for k, v in vars(module).items() if isinstance(v, bool) and any(w in k.lower() for w in FLAG_WORDS)]
    bufs = [k for k, b in module._buffers.items()
            if b is not None and b.numel() == 1 and any(w in k.lower() for w in FLAG_WORDS)]
    return attrs, bufs


class LazyStateProbe:
    """The evidence of one forward call: ``pre(module)`` before it and ``post(module)`` after it each return what
    they found (a phrase for the message, per finding). Modules in train mode cost one attribute read."""

    def __init__(self) -> None:
        self.flags: dict[int, tuple[list[str], list[str]]] = {}  # per module id: its flag names (looked up once)
        self.open: dict[int, tuple[list[str], list[tuple[str, int]]]] = {}  # eval forwards running: flags before

    def pre(self, module: nn.Module) -> list[str]:
        if module.training:
            return []
        found = []
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, SpectralNorm):
                u = getattr(module, hook.name + "_u", None)
                if isinstance(u, torch.Tensor) and u._version == 0:
                    found.append(f"spectral_norm's {hook.name}_u/{hook.name}_v are still the random vectors it "
                                 "started with (no training forward has run its power iteration)")
        if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
            found.append("its lazy parameters are uninitialised: this forward creates them")
        names = self.flags.get(id(module))
        if names is None:
            names = self.flags[id(module)] = _flag_names(module)
        attrs, bufs = names
        if attrs or bufs:
            unset = [k for k in attrs if getattr(module, k, True) is False]
            versions = [(k, b._version) for k in bufs if isinstance(b := module._buffers.get(k), torch.Tensor)]
            if unset or versions:
                self.open[id(module)] = (unset, versions)
        return found

    def post(self, module: nn.Module) -> str | None:
        if not self.open:
            return None
        before = self.open.pop(id(module), None)
        if before is None:
            return None
        unset, versions = before
        set_now = [k for k in unset if getattr(module, k, False) is True]
        written = [k for k, v in versions if isinstance(b := module._buffers.get(k), torch.Tensor) and b._version != v]
        if set_now or written:
            return f"its first-forward initialisation ran in this forward ({', '.join(set_now + written)} set)"
        return None


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
