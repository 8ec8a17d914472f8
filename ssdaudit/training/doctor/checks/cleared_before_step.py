"""T002: between the last backward and ``step()`` the gradients were cleared (zero_grad) or zeroed (clipping)."""

from __future__ import annotations

import torch

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context


class ClearedBeforeStep(Check):
    code = "T002"

    def on_step_pre(self, ctx: Context) -> None:
        if "B" not in ctx.events or ctx.closure_step:
            return
        last = len(ctx.events) - 1 - ctx.events[::-1].index("B")
        after = ctx.events[last + 1:]
        if "Z" in after:
            ctx.report(self.code, f"zero_grad() ran after the backward of step {ctx.current} and before step(): "
                       "the step sees no gradient", subject="optimizer")
            return
        if not ctx.due:
            return
        grads = [p.grad for p in ctx.params() if id(p) in ctx.trained_ids and p.grad is not None]
        if not grads:
            ctx.report(self.code, f"every gradient is None at step() {ctx.current} although a backward reached the "
                       "parameters: something set .grad = None in between", subject="optimizer")
            return
        # all zero? the first nonzero gradient answers no: usually the first tensor looked at, so this costs one
        # small reduction per due step, not a pass over every gradient (the gradient-flow monitor makes its own)
        if not any(bool(torch.any(g)) for g in grads):
            how = " by clip_grad_norm_ (max_norm 0?)" if "C" in after else ""
            ctx.report(self.code, f"all {len(grads)} gradients are zero at step() {ctx.current} after a backward that "
                       f"reached them: they were zeroed in between{how}", subject="optimizer")
