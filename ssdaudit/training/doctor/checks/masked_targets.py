"""T020: a loss over positions a hand-written mask selected, whose targets hold one value at every step.

``F.cross_entropy(logits.view(-1, V)[keep], labels.view(-1)[keep])`` with ``keep = labels.view(-1) == pad`` (the
padding mask the wrong way round) keeps only padding positions: every target is the padding id. T011 sees the
same thing when the mask goes through ``ignore_index``; here the positions are chosen by indexing. The evidence:

* the loss's input was made by boolean indexing or ``masked_select`` (its autograd node, looking through shape-only
  ops), so a mask chose its positions;
* at ``STEPS`` due steps in a row, the targets of the kept positions (two or more) all hold one value, the same
  value every time, while the input has two classes or more.

The class counts are computed on the device and read with the step's other values (no host sync of its own).
"""

from __future__ import annotations

from typing import Any

import torch

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.checks.loss_logits import producer
from ssdaudit.training.doctor.checks.targets import class_counts
from ssdaudit.training.doctor.context import Context

MASKED = ("IndexBackward", "MaskedSelectBackward")
STEPS = 3


class MaskKeepsOneTargetValue(Check):
    code = "T020"

    def __init__(self) -> None:
        self.value: int | None = None  # the single target value of the current run
        self.run = 0  # due steps in a row whose masked targets all held it
        self.kept = 0  # positions kept in them
        self.done = False

    def on_loss(self, ctx: Context, name: str, input: torch.Tensor, target: torch.Tensor, options: dict[str, Any]) -> None:
        if self.done or name not in ("cross_entropy", "nll_loss") or not isinstance(target, torch.Tensor):
            return
        if target.is_floating_point() or not ctx.due or not torch.is_grad_enabled() or input.dim() < 2:
            return
        if target.numel() < 2 or input.shape[1] < 2 or not producer(input).startswith(MASKED):
            return
        ignore = int(options.get("ignore_index", -100))
        with torch.no_grad():
            counts = class_counts(target, input.shape[1], ignore)
        n, step = target.numel(), ctx.current
        ctx.defer(counts, lambda c: self._judge(ctx, name, c, n, step))

    def _judge(self, ctx: Context, name: str, counts: list[float], n: int, step: int) -> None:
        present = [c for c, k in enumerate(counts[:-1]) if k > 0]
        if len(present) != 1 or counts[present[0]] < 2:
            self.value, self.run, self.kept = None, 0, 0  # mixed (or all ignored: T011's)
            return
        value = present[0]
        if value != self.value:
            self.value, self.run, self.kept = value, 0, 0
        self.run += 1
        self.kept += int(counts[value])
        if self.run >= STEPS and not self.done:
            self.done = True
            ctx.report(self.code, f"F.{name} got positions selected by a mask (boolean indexing) whose {self.kept} "
                       f"targets over {self.run} steps up to step {step} all equal {value}: the mask keeps only the "
                       f"positions of one target value (a padding mask the wrong way round, == instead of !=?); "
                       f"{n} positions kept at the last", subject="loss mask")
