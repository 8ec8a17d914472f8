"""T006: BatchNorm/Dropout modules in eval mode in a forward that fed a backward, while their parameters train.

With ``every > 1`` the forwards of due steps are judged (a sample of the run). Deliberate patterns are not
reported. Frozen BatchNorm in a fine-tuning recipe: a module counts only when the
optimizer trains its own parameters (BatchNorm's affine weight) or, for Dropout and BatchNorm without affine
parameters, its parent's. Norm layers put in eval mode one by one while the rest trains (``norm_eval``: frozen
statistics, trained affine parameters): a module counts only when its parent is in eval mode too, which is what a
``model.eval()`` left over from a validation pass looks like.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context

import torch


class EvalModeTraining(Check):
    code = "T006"
    module_types = (_BatchNorm, _DropoutNd)
    module_roots = False

    def __init__(self) -> None:
        self.pending: dict[int, tuple[nn.Module, bool]] = {}  # grad-enabled forwards since the last backward
        self.fed: dict[int, tuple[nn.Module, bool]] = {}  # forwards that fed a backward since the last step

    def on_module_pre(self, ctx: Context, module: nn.Module, args: tuple[Any, ...], root: bool) -> None:
        if isinstance(module, (_BatchNorm, _DropoutNd)) and torch.is_grad_enabled():
            self.pending[id(module)] = (module, module.training)

    def on_backward_end(self, ctx: Context) -> None:
        self.fed.update(self.pending)
        self.pending.clear()

    def _trained(self, ctx: Context, m: nn.Module) -> bool:
        if isinstance(m, _DropoutNd) and m.p == 0:
            return False
        parent = ctx.parent(m)
        if parent is not None and parent.training:
            return False  # put in eval on its own while its parent trains: a deliberate choice
        weight = getattr(m, "weight", None)
        if isinstance(m, _BatchNorm) and weight is not None:
            return id(weight) in ctx.trained_ids
        return parent is not None and ctx.trains(parent)

    def on_step_pre(self, ctx: Context) -> None:
        fed, self.fed = self.fed, {}
        if not fed or not ctx.due:  # between checks (every > 1) the train-mode calls were not followed: no count
            return
        evals = [m for m, training in fed.values() if not training and self._trained(ctx, m)]
        if evals:
            ctx.report(self.code, f"{len(evals)} of {len(fed)} BatchNorm/Dropout modules ran in eval mode in the training "
                       f"forward of step {ctx.current} (e.g. {ctx.name_of(evals[0])}) while their parameters train: "
                       "model.train() missing after a validation pass? (deliberate? --ignore T006, or watch(..., ignore=['T006']))",
                       path=ctx.name_of(evals[0]))
