"""T011: degenerate class targets: every one equal to ignore_index, or one class per batch for many batches.

One class per batch is judged against shuffling. Once two or more classes have been seen, a run of single-class
batches counts when shuffled batches drawn with the class frequencies seen so far would produce it with a
probability below ``RUN_PROBABILITY``: each batch of n samples is single-class with probability sum_c p_c ** n. So a
98:2 imbalance (a batch of 32 is all one class half the time) is not evidence until about 21 such batches in a row,
while sorted data with balanced classes is evidence from the first batch of the second class on. While only one
class has been seen, nothing says the data holds others in any proportion; a run of at least ``RUN_BATCHES``
batches and ``RUN_SAMPLES`` samples counts then (a 98:2 imbalance gives that with probability 0.98 ** 256 < 0.6%),
when the loss's input says there are two classes or more.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch

from ssdaudit.core.findings import Severity
from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context

RUN_BATCHES = 4
RUN_SAMPLES = 256
RUN_PROBABILITY = 1e-6


class DegenerateTargets(Check):
    code = "T011"

    def __init__(self) -> None:
        self.run: list[tuple[int, int]] = []  # (class, samples) of the current run of single-class batches
        self.counts: Counter[int] = Counter()  # samples per class seen so far (one class per sample targets)
        self.reported = False
        self.mixed = False  # a batch held two classes or more

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
        per_sample = target.dim() == 1  # one class per sample: frequencies mean something under shuffling
        if per_sample:
            classes, counts = torch.unique(valid, return_counts=True)
            self.counts.update(dict(zip(classes.tolist(), counts.tolist())))
        lo, hi = (int(v) for v in torch.stack([valid.min(), valid.max()]).tolist())
        if lo != hi or target.shape[0] < 2:
            self.run.clear()
            self.mixed = self.mixed or lo != hi
            return
        self.run.append((lo, target.shape[0]))
        probability = self._chance() if per_sample else None
        if probability is not None:
            evidence = len(self.run) >= 2 and probability < RUN_PROBABILITY
        else:  # one class seen so far (or targets per pixel or token: the one-class rule only, before any mix)
            classes_in_input = input.shape[1] if input.dim() >= 2 else 0
            samples = sum(n for _, n in self.run)
            evidence = (not self.mixed and len(self.run) >= RUN_BATCHES and samples >= RUN_SAMPLES
                        and classes_in_input >= 2)
        if evidence and not self.reported:
            self.reported = True
            samples = sum(n for _, n in self.run)
            seen = sorted({c for c, _ in self.run})
            chance = (f"; shuffled batches with the class frequencies seen so far ({self._frequencies()}) would do "
                      f"that with probability {probability:.0e}") if probability is not None else ""
            ctx.report(self.code, f"{len(self.run)} batches in a row ({samples} samples) each hold a single class "
                       f"(classes {seen}) up to step {ctx.current}{chance}: data sorted by label, no shuffle? "
                       "(deliberate? --ignore T011, or watch(..., ignore=['T011']))", subject="targets",
                       severity=Severity.WARNING)  # a heuristic: a warning, the inverted mask above an error

    def _chance(self) -> float | None:
        """The probability that shuffled batches of the run's sizes are each single-class, with the frequencies seen
        so far; None while fewer than two classes have been seen (per-sample targets only)."""
        total = sum(self.counts.values())
        seen = [c for c, n in self.counts.items() if n > 0]
        if len(seen) < 2 or total == 0:
            return None
        freqs = [n / total for n in self.counts.values() if n > 0]
        log_p = 0.0
        for _, n in self.run:
            log_p += math.log(max(sum(f ** n for f in freqs), 1e-300))
        return math.exp(log_p)

    def _frequencies(self) -> str:
        total = sum(self.counts.values())
        top = self.counts.most_common(3)
        shown = ", ".join(f"class {c} {n / total:.0%}" for c, n in top)
        return shown + (", ..." if len(self.counts) > 3 else "")
