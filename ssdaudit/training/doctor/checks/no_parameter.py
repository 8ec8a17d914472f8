"""T005: a step with no backward into the optimizer's parameters since the previous one."""

from __future__ import annotations

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context


class BackwardReachesNoParameter(Check):
    code = "T005"

    def on_step_pre(self, ctx: Context) -> None:
        if "B" in ctx.events or ctx.closure_step or not ctx.trained_ids:
            return
        why = (f"; {ctx.loss_without_graph} loss call(s) got inputs without an autograd graph (computed under "
               "no_grad or detached)" if ctx.loss_without_graph else "")
        ctx.report(self.code, f"no backward reached any of the optimizer's {len(ctx.trained_ids)} trainable parameters "
                   f"before step {ctx.current}{why}", subject="optimizer")
