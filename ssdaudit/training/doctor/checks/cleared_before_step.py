"""T002: between the last backward and ``step()`` the gradients were cleared (zero_grad) or zeroed (clipping).

Gradients that are zero at the step because the loss gave none (every target ignored, a NaN or constant loss) were
not cleared: all-zero gradients count only after a clip, or when they were nonzero at the end of the backward.
"""

from __future__ import annotations

import torch

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.doctor.events import StepEvent
from ssdaudit.training.gradflow.sharded import local


class ClearedBeforeStep(Check):
    code = "T002"

    def __init__(self) -> None:
        self.after_backward: torch.Tensor | None = None  # the largest gradient norm at the end of the last backward

    def on_backward_end(self, ctx: Context) -> None:
        # local(): a sharded (FSDP2) gradient is read as this rank's shard, never through a collective
        grads = [local(p.grad) for p in ctx.params() if id(p) in ctx.trained_ids and p.grad is not None] if ctx.due else []
        self.after_backward = torch.stack(torch._foreach_norm(grads)).max() if grads else None  # no host sync here

    def on_step_pre(self, ctx: Context) -> None:
        after = ctx.events.after_last(StepEvent.BACKWARD)
        if after is None or ctx.closure_step:
            return
        if StepEvent.ZERO_GRAD in after:
            ctx.report(self.code, f"{ctx.label}: zero_grad() ran after the backward of step {ctx.current} and before step(): "
                       "the step sees no gradient", subject="optimizer")
            return
        if not ctx.due:
            return
        grads = [local(p.grad) for p in ctx.params() if id(p) in ctx.trained_ids and p.grad is not None]
        if not grads:
            ctx.report(self.code, f"{ctx.label}: every gradient is None at step() {ctx.current} although a backward reached the "
                       "parameters: something set .grad = None in between", subject="optimizer")
            return
        # all zero? the first nonzero gradient answers no: usually the first tensor looked at, so this costs one
        # small reduction per due step, read with the step's other values (one host sync per step); only when it is
        # zero are the others looked at (the gradient-flow monitor makes its own pass)
        was = self.after_backward
        clipped = StepEvent.CLIP in after
        first = torch.stack([grads[0].any(), was > 0 if was is not None else torch.zeros((), dtype=torch.bool,
                                                                                           device=grads[0].device)])
        ctx.defer(first, lambda v: self._judge(ctx, grads, bool(v[0]), bool(v[1]), clipped))

    def _judge(self, ctx: Context, grads: list[torch.Tensor], first_nonzero: bool, was_nonzero: bool,
               clipped: bool) -> None:
        if first_nonzero or not (clipped or was_nonzero):
            return
        if any(bool(torch.any(g)) for g in grads[1:]):
            return
        how = " by clip_grad_norm_ (max_norm 0?)" if clipped else ""
        ctx.report(self.code, f"{ctx.label}: all {len(grads)} gradients are zero at step() {ctx.current} after a backward "
                   f"that reached them: they were zeroed in between{how}", subject="optimizer")
