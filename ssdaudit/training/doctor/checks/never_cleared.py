"""T001: a step whose gradients still hold those of the previous step (nothing cleared them in between).

The first backward after a step that finds the previous gradients still there (nonzero, no ``zero_grad``) is only
a suspicion: with several optimizers that is the rule, not a bug (a GAN's generator loss reaches the
discriminator's parameters after the discriminator's step, and the discriminator's optimizer clears them before its
own next step). It is reported at this optimizer's step when nothing cleared its parameters in between: no
``zero_grad`` of it or its model, and the suspicious ``.grad`` tensor not replaced.
"""

from __future__ import annotations

import torch

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.doctor.events import StepEvent
from ssdaudit.training.gradflow.sharded import local


class NeverCleared(Check):
    code = "T001"

    def __init__(self) -> None:
        # (parameter, its stale .grad, whether that held a nonzero value (a device tensor), message)
        self.stale: tuple[torch.Tensor, torch.Tensor, torch.Tensor, str] | None = None

    def on_backward_start(self, ctx: Context, param: torch.Tensor) -> None:
        if self.stale is not None or ctx.step == 0 or StepEvent.BACKWARD in ctx.events or StepEvent.ZERO_GRAD in ctx.events:
            return  # before the first step, within an accumulation window, or cleared: nothing to see
        if param.grad is None or not ctx.due:
            return
        # Cleared another way (model.zero_grad(set_to_none=False), a loop over p.grad.zero_()): zeros are fine.
        # (read at the end of the step with its other values: one host sync per step; a sharded (FSDP2) gradient:
        # this rank's shard, no collective)
        self.stale = (param, param.grad, local(param.grad).any(), f"{ctx.label}: the backward of step {ctx.current} adds to "
                      f"gradients left from step {ctx.step} ({ctx.name_of(param)} still holds them): no zero_grad() "
                      f"between step {ctx.step} and step {ctx.current}")

    def on_step_pre(self, ctx: Context) -> None:
        if self.stale is None:
            return
        param, grad, nonzero, message = self.stale
        self.stale = None
        if StepEvent.ZERO_GRAD in ctx.events or param.grad is not grad:
            return  # cleared before this optimizer's step (the backward was another optimizer's)
        ctx.defer(nonzero, lambda v: ctx.report(self.code, message, subject="optimizer") if v[0] else None)
