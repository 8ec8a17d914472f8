"""T008: functional dropout with training=True inside a module in eval mode (randomness at evaluation)."""

from __future__ import annotations

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context


class RandomInEval(Check):
    code = "T008"

    def on_dropout(self, ctx: Context, p: float, training: bool) -> None:
        if training and p > 0 and ctx.stack and not ctx.stack[-1].training:
            module = ctx.stack[-1]
            ctx.report(self.code, f"F.dropout(p={p:g}) ran with training=True inside {ctx.name_of(module)} "
                       f"({type(module).__name__}), which is in eval mode: evaluation is random",
                       path=ctx.name_of(module))
