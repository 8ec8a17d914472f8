"""T001: the first backward after a step finds the previous step's gradients still there (nothing cleared them)."""

from __future__ import annotations

import torch

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context


class NeverCleared(Check):
    code = "T001"

    def on_backward_start(self, ctx: Context, param: torch.Tensor) -> None:
        if ctx.step == 0 or "B" in ctx.events or "Z" in ctx.events or param.grad is None or not ctx.due:
            return  # before the first step, within an accumulation window, or cleared: nothing to see
        # Cleared another way (model.zero_grad(set_to_none=False), a loop over p.grad.zero_()): zeros are fine.
        if bool(param.grad.count_nonzero() > 0):
            ctx.report(self.code, f"the backward of step {ctx.current} adds to gradients left from step {ctx.step} "
                       f"({ctx.name_of(param)} still holds them): zero_grad() is never called between steps",
                       subject="optimizer")
