"""T003: zero_grad() between two backward passes of one step (an accumulation window that keeps only the last).

Only the backwards since another optimizer's last step count: those before it were that optimizer's (a GAN's
generator loss also reaches the discriminator, whose optimizer then rightly clears them before its own backward).
"""

from __future__ import annotations

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.doctor.events import StepEvent


class ZeroGradInWindow(Check):
    code = "T003"

    def on_step_pre(self, ctx: Context) -> None:
        own = ctx.events.since(StepEvent.OTHER_STEP)
        at = [i for i, e in enumerate(own) if e is StepEvent.BACKWARD]
        backwards = len(at)
        # zero_grad calls between the first and the last backward
        inner = sum(1 for e in own[at[0]:at[-1]] if e is StepEvent.ZERO_GRAD) if backwards > 1 else 0
        if inner:
            ctx.report(self.code, f"{ctx.label}: step {ctx.current} follows {backwards} backward passes with zero_grad() "
                       f"between them ({inner} times): only the last micro-batch's gradient reaches the step",
                       subject="optimizer")
