"""T015: trainable parameters of the model missing from the optimizer, which holds tensors that are no longer in the
model and that no backward reaches (of the same shapes, or, for a new head of another size, of any): they were
replaced after the optimizer was built."""

from __future__ import annotations

from collections import Counter

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.gradflow.sharded import local

FIRST_STEPS = 3


class ParametersReplaced(Check):
    code = "T015"

    def on_step_pre(self, ctx: Context) -> None:
        if ctx.model is None or ctx.step >= FIRST_STEPS:
            return
        opt = ctx.params()
        model = dict(ctx.model.named_parameters())
        model_ids = {id(p) for p in model.values()}
        # tensors the optimizer holds that the model no longer has and that no backward reached (trained modules
        # outside the model, such as a decoder in the same optimizer, have gradients: they are not left behind)
        left = [p for p in opt if id(p) not in model_ids and (p.grad is None or not bool(local(p.grad).any()))]
        if not left:
            return
        stale = Counter(tuple(p.shape) for p in left)
        missing = [(n, p) for n, p in model.items() if p.requires_grad and id(p) not in ctx.optimizer_ids]
        new = [(n, p) for n, p in missing if stale[tuple(p.shape)] > 0] or missing
        if new:
            same = stale[tuple(new[0][1].shape)] > 0
            names = ", ".join(n for n, _ in new[:4]) + (" ..." if len(new) > 4 else "")
            held = (f"{len(left)} tensors of the same shapes that the model no longer has" if same else
                    f"{len(left)} tensors ({', '.join(str(tuple(p.shape)) for p in left[:3])}) that the model no "
                    "longer has and that get no gradient")
            ctx.report(self.code, f"{len(new)} trainable parameters ({names}) are not in the optimizer, which holds "
                       f"{held}: replaced after the optimizer was built", path=new[0][0].rsplit(".", 1)[0],
                       params=sum(p.numel() for _, p in new))
