"""T011: degenerate class targets: every one equal to ignore_index, or one class per batch for many batches.

One class per batch counts only over a run of at least ``RUN_BATCHES`` batches holding ``RUN_SAMPLES`` samples in
all: with shuffled data that is improbable even for a 95:5 class imbalance (0.95**128 < 0.2%).
"""

from __future__ import annotations

from typing import Any

import torch

from ssdaudit.core.findings import Severity
from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context

RUN_BATCHES = 4
RUN_SAMPLES = 128


class DegenerateTargets(Check):
    code = "T011"

    def __init__(self) -> None:
        self.run_batches = 0
        self.run_samples = 0
        self.classes: set[int] = set()

    def on_loss(self, ctx: Context, name: str, input: torch.Tensor, target: torch.Tensor, options: dict[str, Any]) -> None:
        if name not in ("cross_entropy", "nll_loss") or not isinstance(target, torch.Tensor):
            return
        if target.is_floating_point() or not torch.is_grad_enabled() or not ctx.due or target.numel() == 0:
            return
        ignore = int(options.get("ignore_index", -100))
        valid = target[target != ignore]
        if valid.numel() == 0:
            ctx.report(self.code, f"all {target.numel()} targets of F.{name} at step {ctx.current} equal ignore_index="
                       f"{ignore}: the loss has nothing to learn from (an inverted padding mask?)", subject="targets")
            return
        lo, hi = (int(v) for v in torch.stack([valid.min(), valid.max()]).tolist())
        if lo == hi and target.shape[0] > 1:
            self.run_batches += 1
            self.run_samples += target.shape[0]
            self.classes.add(lo)
        else:
            self.run_batches = self.run_samples = 0
            self.classes.clear()
        if self.run_batches >= RUN_BATCHES and self.run_samples >= RUN_SAMPLES:
            ctx.report(self.code, f"{self.run_batches} batches in a row ({self.run_samples} samples) each hold a single "
                       f"class (classes {sorted(self.classes)}) up to step {ctx.current}: data sorted by label, no "
                       "shuffle? (deliberate? --ignore T011, or watch(..., ignore=['T011']))", subject="targets",
                       severity=Severity.WARNING)  # a heuristic: a warning, the inverted mask above an error
