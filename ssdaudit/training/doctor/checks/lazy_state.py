"""T023: a module's lazily initialised state is first used by an eval-mode forward, before any training forward.

Read from the state itself, so a training forward made before the watch began counts as well:

* ``torch.nn.utils.spectral_norm``: its ``<name>_u`` vector starts random and only a training forward refines it
  (the power iteration writes it in place, moving its version counter; ``load_state_dict`` does too). An eval
  forward while the version is still 0 divides the weight by a sigma from random vectors;
* a lazy module (``nn.LazyLinear``, ``LazyConv2d`` ...) with uninitialised parameters: its first forward makes them;
* a first-forward initialisation (ActNorm, data-dependent init): a boolean attribute or a one-element buffer whose
  name says so (``initialized``, ``initialised``, ``inited`` ...) that an eval forward set (the attribute turned
  True, or the buffer was written: its version counter moved).

Costs nothing in training forwards (train mode returns first), and no host sync. Under ``ssdaudit watch`` the same
evidence is gathered from the script's first line (``early_forwards``): an evaluation of the model before its
optimizer is built, when no watch exists yet, is named too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.utils.spectral_norm import SpectralNorm

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context

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


class LazyStateInEval(Check):
    code = "T023"
    training_calls = False  # eval-mode forwards only

    def __init__(self) -> None:
        self.probe = LazyStateProbe()

    def on_attach(self, ctx: Context) -> None:
        from ssdaudit.training.doctor.early_forwards import recent_early_forwards

        for module, what in recent_early_forwards():  # before any watch existed (``ssdaudit watch``)
            if ctx.in_model(module):
                self._report(ctx, module, f"{what} (before the optimizer was built)")

    def on_module_pre(self, ctx: Context, module: nn.Module, args: tuple[Any, ...], root: bool) -> None:
        for what in self.probe.pre(module):
            self._report(ctx, module, what)

    def on_module_post(self, ctx: Context, module: nn.Module, output: Any, root: bool) -> None:
        what = self.probe.post(module)
        if what is not None:
            self._report(ctx, module, what)

    def _report(self, ctx: Context, module: nn.Module, what: str) -> None:
        name = ctx.name_of(module)
        ctx.report(self.code, f"{name} ({type(module).__name__}) ran in eval mode before any training forward: "
                   f"{what}; the eval output (and for a data-dependent initialisation, the state) comes from "
                   "uninitialised state (run a training forward first, or initialise it explicitly)", path=name)
