"""T015: trainable parameters of the model missing from the optimizer, which holds tensors of the same shapes that
are no longer in the model: they were replaced after the optimizer was built."""

from __future__ import annotations

from collections import Counter

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context

FIRST_STEPS = 3


class ParametersReplaced(Check):
    code = "T015"

    def on_step_pre(self, ctx: Context) -> None:
        if ctx.model is None or ctx.step >= FIRST_STEPS:
            return
        opt = ctx.params()
        model = dict(ctx.model.named_parameters())
        model_ids = {id(p) for p in model.values()}
        stale = Counter(tuple(p.shape) for p in opt if id(p) not in model_ids)
        if not stale:
            return
        new = [(n, p) for n, p in model.items() if p.requires_grad and id(p) not in ctx.optimizer_ids
               and stale[tuple(p.shape)] > 0]
        if new:
            names = ", ".join(n for n, _ in new[:4]) + (" ..." if len(new) > 4 else "")
            ctx.report(self.code, f"{len(new)} trainable parameters ({names}) are not in the optimizer, which holds "
                       f"{sum(stale.values())} tensors of the same shapes that the model no longer has: replaced after "
                       "the optimizer was built", path=new[0][0].rsplit(".", 1)[0],
                       params=sum(p.numel() for _, p in new))
