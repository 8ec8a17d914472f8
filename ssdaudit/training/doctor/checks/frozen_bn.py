"""T007: BatchNorm in train mode in a frozen module: its statistics move although its parameters are frozen.

Frozen means: its affine parameters have requires_grad False, or (inside the watched model) the optimizer does not
hold them. A module outside the watched model counts only with requires_grad False (a teacher), so that another
model with its own optimizer (a GAN's other half) is never taken for a frozen one.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context


class FrozenBatchNormMoves(Check):
    code = "T007"

    def __init__(self) -> None:
        self.seen: dict[int, nn.Module] = {}
        self.total: set[int] = set()

    def on_module_pre(self, ctx: Context, module: nn.Module, args: tuple[Any, ...], root: bool) -> None:
        if not isinstance(module, _BatchNorm) or not module.training or not module.track_running_stats:
            return
        weight = module.weight
        if weight is None or module.running_mean is None:
            return
        self.total.add(id(module))
        frozen = not weight.requires_grad or (ctx.in_model(module) and id(weight) not in ctx.optimizer_ids)
        if frozen:
            self.seen[id(module)] = module

    def on_step_pre(self, ctx: Context) -> None:
        if self.seen:
            first = next(iter(self.seen.values()))
            ctx.report(self.code, f"{len(self.seen)} of {len(self.total)} BatchNorm modules in train mode are frozen "
                       f"(requires_grad False or not in the optimizer), e.g. {ctx.name_of(first)}: their running "
                       "statistics move with every batch (call .eval() on the frozen module after model.train(); "
                       "deliberate? --ignore T007, or watch(..., ignore=['T007']))", path=ctx.name_of(first))
            self.seen.clear()
