"""T004: a learning rate that is 0 on two steps in a row, or that falls to 1/10 of its peak in the first steps.

A warm-up that starts at 0 rises on the next step and is not reported; a decay over a real horizon does not lose
an order of magnitude in the first ``early_steps`` steps (100 by default), while a schedule stepped per batch with
a horizon counted in epochs (StepLR(step_size=30), MultiStepLR, a cosine over ``epochs``) does.
"""

from __future__ import annotations

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context

COLLAPSE = 10.0  # an order of magnitude


class LearningRateCollapse(Check):
    code = "T004"

    def __init__(self, early_steps: int = 100) -> None:
        self.early_steps = early_steps
        self.peak: dict[int, float] = {}
        self.zeros: dict[int, int] = {}

    def on_step_pre(self, ctx: Context) -> None:
        if ctx.step >= self.early_steps:
            return
        sched = f" (scheduler {type(ctx.scheduler).__name__})" if ctx.scheduler is not None else ""
        for gi, group in enumerate(ctx.optimizer.param_groups):
            if not any(p.requires_grad for p in group["params"]):
                continue
            lr = float(group.get("lr", 0.0))
            self.zeros[gi] = self.zeros.get(gi, 0) + 1 if lr == 0 else 0
            if self.zeros[gi] >= 2:
                ctx.report(self.code, f"param group {gi} has lr 0 at steps {ctx.current - 1} and {ctx.current}{sched}: "
                           "its parameters do not train", subject=f"param_group {gi}")
                continue
            peak = self.peak[gi] = max(self.peak.get(gi, 0.0), lr)
            if peak > 0 and 0 < lr <= peak / COLLAPSE * (1 + 1e-6):  # (0.05 * 0.1 is 0.005000000000000001)
                ctx.report(self.code, f"param group {gi}: lr fell from {peak:.3g} to {lr:.3g} ({peak / lr:.0f}x) by step "
                           f"{ctx.current}{sched}: a scheduler stepped per batch with a horizon in epochs?",
                           subject=f"param_group {gi}")
            elif peak > 0 and lr == 0:
                ctx.report(self.code, f"param group {gi}: lr fell from {peak:.3g} to 0 by step {ctx.current}{sched}: "
                           "a scheduler horizon shorter than the run?", subject=f"param_group {gi}")
