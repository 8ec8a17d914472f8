"""T004: a learning rate that is 0 on two steps in a row, or that collapses (to 1/10 of its peak, or to 0) in the
first steps because its schedule is spent long before the run ends.

A warm-up that starts at 0 rises on the next step and is not reported. A collapse is judged against the
schedulers that step this optimizer (seen through ``LRScheduler.step``):

* a scheduler with a horizon (``T_max``, ``total_steps``, ``total_iters``, the step at which a LambdaLR's factor
  reaches 0) is spent when it is stepped past it while the optimizer still steps: reported then (a cosine over
  ``epochs`` stepped per batch); a decay that follows the horizon (a OneCycleLR, or a linear decay with warm-up,
  over the whole run) is the design;
* a scheduler without one (StepLR, MultiStepLR, ExponentialLR ...) stepped once per optimizer step: reported at the
  collapse (StepLR(step_size=30) stepped per batch); stepped once per several optimizer steps (per epoch) the decay
  is deliberate;
* no scheduler seen (the rates set by hand): reported at the collapse.

Only collapses within the first ``early_steps`` steps (100 by default) count.
"""

from __future__ import annotations

from typing import Any

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context

COLLAPSE = 10.0  # an order of magnitude
HORIZONS = ("T_max", "total_steps", "total_iters")  # CosineAnnealingLR, OneCycleLR, LinearLR/PolynomialLR/ConstantLR


LAMBDA_SCAN = 100_000  # how far a LambdaLR's factors are evaluated to find where they reach 0


def horizon(scheduler: Any) -> tuple[str, int] | None:
    """The scheduler's horizon in its own steps, as (how to name it, steps), or None when it has none. A LambdaLR's is
    the first step at which every factor is 0 (the linear and cosine schedules with warm-up of common training
    libraries are LambdaLRs that end at 0); a factor that raises, or never reaches 0 in ``LAMBDA_SCAN`` steps, gives
    none."""
    for name in HORIZONS:
        value = getattr(scheduler, name, None)
        if isinstance(value, int) and value > 0:
            return f"{name}={value}", value
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if type(scheduler).__name__ == "LambdaLR" and lambdas:
        try:
            for n in range(1, LAMBDA_SCAN):
                if all(float(f(n)) == 0.0 for f in lambdas):
                    return f"its factor is 0 from step {n}", n
        except Exception:  # the user's function: anything may happen
            return None
    return None


class LearningRateCollapse(Check):
    code = "T004"

    def __init__(self, early_steps: int = 100) -> None:
        self.early_steps = early_steps
        self.peak: dict[int, float] = {}
        self.zeros: dict[int, int] = {}
        self.collapsed: dict[int, tuple[float, float, int]] = {}  # group -> (peak, lowest lr, step first seen)
        # id(scheduler) -> (scheduler, optimizer step of its last call, fewest optimizer steps between two calls)
        self.schedulers: dict[int, tuple[Any, int, int]] = {}
        self.horizons: dict[int, tuple[str, int] | None] = {}  # id(scheduler) -> its horizon (found once)

    def on_scheduler(self, ctx: Context, scheduler: Any) -> None:
        _, last, gap = self.schedulers.get(id(scheduler), (scheduler, -1, 0))
        if last >= 0 and ctx.step > last:
            gap = ctx.step - last if gap == 0 else min(gap, ctx.step - last)
        self.schedulers[id(scheduler)] = (scheduler, ctx.step if last < 0 or ctx.step > last else last, gap)

    def _why(self, ctx: Context) -> str | None:
        """Why a collapse is a bug ("" when no scheduler was seen), or None when the schedule explains it."""
        if not self.schedulers:
            return ""
        for key, (sched, _, gap) in self.schedulers.items():
            if key not in self.horizons:
                self.horizons[key] = horizon(sched)
            h = self.horizons[key]
            name = type(sched).__name__
            if h is not None:
                if int(getattr(sched, "last_epoch", 0)) > h[1]:
                    return (f": {name} is stepped past its horizon ({h[0]}) while training goes on (a "
                            "horizon counted in epochs, stepped per batch?)")
            elif gap == 1:
                return f": {name} is stepped once per optimizer step (a schedule counted in epochs, stepped per batch?)"
        return None

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
                ctx.report(self.code, f"{ctx.label}, param group {gi} has lr 0 at steps {ctx.current - 1} and {ctx.current}{sched}: "
                           "its parameters do not train", subject=f"param_group {gi}")
                continue
            peak = self.peak[gi] = max(self.peak.get(gi, 0.0), lr)
            if peak > 0 and lr <= peak / COLLAPSE * (1 + 1e-6):  # (0.05 * 0.1 is 0.005000000000000001)
                before = self.collapsed.get(gi)
                if before is None or lr < before[1]:
                    self.collapsed[gi] = (peak, lr, ctx.current)
            if gi not in self.collapsed:
                continue
            why = self._why(ctx)
            if why is None:
                continue
            high, low, at = self.collapsed[gi]
            fell = (f"to {low:.3g} ({high / low:.0f}x)" if low > 0 else "to 0" if low == 0 else
                    f"below 0, to {low:.3g} (a negative rate climbs the loss)")
            hint = why or (": a scheduler stepped per batch with a horizon in epochs?" if low > 0 else
                           ": a scheduler horizon shorter than the run?")
            ctx.report(self.code, f"{ctx.label}, param group {gi}: lr fell from {high:.3g} {fell} by step {at}{sched}{hint}",
                       subject=f"param_group {gi}")
