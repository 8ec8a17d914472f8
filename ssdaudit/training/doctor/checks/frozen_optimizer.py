"""T019: an optimizer steps while every parameter it holds has ``requires_grad=False``: nothing trains.

T005 (no backward reached the optimizer's parameters) is about trainable parameters the loss never reached; it has
nothing to say when there are none. The evidence is structural and costs no host sync: at each step, the
optimizer's parameters (re-read, since param groups can be added and ``requires_grad`` switched on later, as a staged
unfreezing does) and their ``requires_grad``. Reported at the first step that finds none trainable.
"""

from __future__ import annotations

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context


class OptimizerHoldsOnlyFrozen(Check):
    code = "T019"

    def on_step_pre(self, ctx: Context) -> None:
        if ctx.trained_ids or not ctx.optimizer_ids:
            return
        n = len(ctx.optimizer_ids)
        values = sum(p.numel() for p in ctx.params())
        ctx.report(self.code, f"{ctx.label}: all {n} parameter tensors it holds ({values:,} values) have "
                   f"requires_grad=False at step {ctx.current}: they get no gradient and step() changes nothing "
                   "(frozen after the optimizer was built, or the optimizer built from the frozen part?)",
                   subject="optimizer", params=values)
