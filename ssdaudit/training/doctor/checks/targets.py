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
        if input.dim() < 2:
            return
        ignore = int(options.get("ignore_index", -100))
        classes = input.shape[1]
        with torch.no_grad():
            counts = class_counts(target, classes, ignore)
        per_sample = target.dim() == 1
        n, batch = target.numel(), target.shape[0]
        ctx.defer(counts, lambda c: self._judge(ctx, name, c, n, batch, ignore, classes, per_sample))

    def _judge(self, ctx: Context, name: str, counts: list[float], n: int, batch: int, ignore: int, classes: int,
               per_sample: bool) -> None:
        """``counts``: targets per class, then those equal to ignore_index (or outside the classes) last."""
        present = {c: int(k) for c, k in enumerate(counts[:classes]) if k > 0}
        if not present:
            ctx.report(self.code, f"all {n} targets of F.{name} at step {ctx.current} equal ignore_index="
                       f"{ignore}: the loss has nothing to learn from (an inverted padding mask?)", subject="targets")
            return
        if per_sample:  # one class per sample: frequencies mean something under shuffling
            self.counts.update(present)
        lo, hi = min(present), max(present)
        if lo != hi or batch < 2:
            self.run.clear()
            self.mixed = self.mixed or lo != hi
            return
        self.run.append((lo, batch))
        probability = self._chance() if per_sample else None
        if probability is not None:
            evidence = len(self.run) >= 2 and probability < RUN_PROBABILITY
        else:  # one class seen so far (or targets per pixel or token: the one-class rule only, before any mix)
            samples = sum(k for _, k in self.run)
            evidence = (not self.mixed and len(self.run) >= RUN_BATCHES and samples >= RUN_SAMPLES
                        and classes >= 2)
        if evidence and not self.reported:
            self.reported = True
            samples = sum(k for _, k in self.run)
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


def class_counts(target: torch.Tensor, classes: int, ignore: int) -> torch.Tensor:
    """Targets per class, as a ``(classes + 1,)`` float tensor on the target's device: the last entry counts
    those equal to ``ignore`` or outside ``0..classes-1``. A fixed size, so no host sync (``torch.unique`` and
    ``bincount`` need one on a GPU to size their output)."""
    t = target.reshape(-1).long()
    t = torch.where((t == ignore) | (t < 0) | (t >= classes), torch.full_like(t, classes), t)
    return torch.zeros(classes + 1, device=t.device).scatter_add_(0, t, torch.ones(t.shape, device=t.device))
