"""T003: zero_grad() between two backward passes of one step (an accumulation window that keeps only the last).

Only the backwards since another optimizer's last step count: those before it were that optimizer's (a GAN's
generator loss also reaches the discriminator, whose optimizer then rightly clears them before its own backward).
"""

from __future__ import annotations

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context


class ZeroGradInWindow(Check):
    code = "T003"

    def on_step_pre(self, ctx: Context) -> None:
        own = ctx.events[len(ctx.events) - ctx.events[::-1].index("O"):] if "O" in ctx.events else ctx.events
        seq = "".join(e for e in own if e in "BZ")
        backwards = seq.count("B")
        inner = seq.strip("Z").count("Z") if backwards > 1 else 0  # zero_grad calls between the first and last backward
        if inner:
            ctx.report(self.code, f"{ctx.label}: step {ctx.current} follows {backwards} backward passes with zero_grad() "
                       f"between them ({inner} times): only the last micro-batch's gradient reaches the step",
                       subject="optimizer")
