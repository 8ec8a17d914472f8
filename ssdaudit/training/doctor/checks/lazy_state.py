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

from torch import nn

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.doctor.early_forwards import LazyStateProbe, recent_early_forwards


class LazyStateInEval(Check):
    code = "T023"
    training_calls = False  # eval-mode forwards only

    def __init__(self) -> None:
        self.probe = LazyStateProbe()

    def on_attach(self, ctx: Context) -> None:
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
