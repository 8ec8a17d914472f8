"""T021: labels independent of the inputs (inputs and labels shuffled with two different permutations).

The loss tap holds each batch's outputs and targets. Next to the real loss, the check computes the loss the
same outputs would have with the targets permuted across the batch (a fixed permutation per batch size, from a
generator of its own: the user's random stream is not touched). When labels belong to their inputs, a model that
learns makes the true pairs cheaper than permuted ones; when they are independent, the permuted loss is no worse,
however long the model trains, while the loss sits at the entropy of the label frequencies and the gradients look
healthy.

A model at the start of training (a hard task not yet learned, a random initialisation) is no better on true
pairs either, so one step, or a few, says nothing: the evidence is a sustained pattern. Only after ``MIN_STEPS``
optimizer steps (with gradient accumulation, many batches make one step), and judged on the batches of the later
half of them, the finding needs the permuted loss to be no worse than the real one
by more than ``TOLERANCE`` of the real loss on average (a model that learns, even slowly, is ahead by far more
than that within a few dozen steps: 0.7 nats at step 10 on an easy task, where shuffled labels stay within 0.05 of
zero). Per batch of class indices
(``(B, C)`` input, ``B >= MIN_BATCH``): two gathers from one ``log_softmax`` on the device, kept there and read with the
step's other values on due steps. Not judged while the learning rate rises (a warm-up: the model may not have moved
yet) or while the real loss still falls by ``FALLING`` within the judged half. A slow learner that has not started
yet looks the same, so this evidence alone makes only a note.

The warning comes from the data themselves: an input seen again (the next epoch) with another target. Each training
forward of the model fingerprints the rows of its first input (a fixed random projection of up to ``MAX_COLUMNS``
values per row, in float64 on the device) and the loss call that follows pairs them with its targets (one class
index per row; token targets are left out: one window of text is rightly followed by different tokens in different
places); the pairs are read with the step's other values on due steps. When
labels belong to their inputs, an input comes back with its target; when inputs and labels are shuffled with two
permutations, most come back with another. ``MIN_CONFLICTS`` inputs back with another target, at least
``CONFLICT_SHARE`` of those that came back, is the warning. Inputs that never repeat (augmentation, fresh data)
give no such evidence, and no finding from it; nor does a fingerprint met twice within one batch (a sampler with
replacement, or sparse rows whose sampled values are all zero: a fingerprint that cannot tell them apart).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch

from ssdaudit.core.findings import Severity
from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.doctor.parallel import is_model_forward

MIN_STEPS = 40
MIN_BATCH = 8
TOLERANCE = 0.05
FALLING = 0.05  # the real loss still falling by this fraction within the judged half: the model is learning, wait
MAX_COLUMNS = 16384  # values per input row in its fingerprint (a fixed random subset of longer rows)
MIN_CONFLICTS = 8  # inputs seen again with another target
CONFLICT_SHARE = 0.3  # ... among the inputs seen again
MAX_SEEN = 200_000  # input fingerprints kept
MAX_ROWS = 4096  # rows of a batch the permuted loss is computed on


def fingerprint_columns(width: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The columns a row of ``width`` values is fingerprinted on (``(MAX_COLUMNS,)`` int64 in increasing order, or
    None: all of them) and their weights (float64 in [0.5, 1.5)), fixed by ``width`` alone (a generator of its own
    seeded with it: every rank and every run picks the same)."""
    g = torch.Generator().manual_seed(width)
    # in increasing order, read with index_select: a gather in random order is about 30x slower on a CPU
    pick = torch.randperm(width, generator=g)[:MAX_COLUMNS].sort().values if width > MAX_COLUMNS else None
    return pick, torch.rand(min(width, MAX_COLUMNS), generator=g, dtype=torch.float64) + 0.5


class LabelsIndependentOfInputs(Check):
    code = "T021"
    module_types = ()  # root calls only: the model's input batch

    def __init__(self) -> None:
        self.pending: list[torch.Tensor] = []  # (2,) real and permuted loss per batch, on the device, unread
        self.history: list[tuple[float, float]] = []
        self.steps: list[tuple[int, float]] = []  # per batch: its optimizer step, the first group's learning rate
        self.perms: dict[tuple[int, str], torch.Tensor] = {}
        self.done = False  # the warning was given (the inputs seen again)
        self.noted = False  # the note was given (the permuted loss)
        self.rows: torch.Tensor | None = None  # fingerprints of the rows of the last training forward's input
        self.pairs: list[torch.Tensor] = []  # (2, B) input and target fingerprints per batch, on the device, unread
        self.sizes: list[int] = []  # ... and each one's B
        self.ambiguous: set[float] = set()  # input fingerprints met twice in one batch: never evidence
        self.seen: dict[float, float] = {}  # input fingerprint -> the target fingerprint it came with first
        self.back: set[float] = set()  # inputs seen again
        self.conflicts: set[float] = set()  # ... with another target
        self.weights: dict[tuple[int, str], tuple[torch.Tensor | None, torch.Tensor]] = {}

    def _fingerprints(self, t: torch.Tensor, rows: int) -> torch.Tensor | None:
        """(rows,) float64: a fixed random projection of each row of ``t`` (the first ``rows`` of its leading
        dimension); None for a tensor that is not made of such rows."""
        if t.dim() == 0 or t.shape[0] != rows or t.is_complex() or t.numel() == 0:
            return None
        flat = t.detach().reshape(rows, -1)
        key = (flat.shape[1], str(flat.device))
        pick_w = self.weights.get(key)
        if pick_w is None:
            pick, w = fingerprint_columns(flat.shape[1])
            pick_w = self.weights[key] = (pick.to(flat.device) if pick is not None else None, w.to(flat.device))
        pick, w = pick_w
        if pick is not None:
            flat = flat.index_select(1, pick)
        return flat.to(torch.float64) @ w

    def on_module_pre(self, ctx: Context, module: Any, args: tuple[Any, ...], root: bool) -> None:
        # only the model's forward replaces the rows: a loss module's own call (nn.CrossEntropyLoss()) comes between
        # the forward and the loss
        if self.done or not args or not torch.is_grad_enabled() or not is_model_forward(ctx, module):
            return
        self.rows = None
        x = args[0]
        if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[0] >= MIN_BATCH and getattr(module, "training", True):
            with torch.no_grad():
                self.rows = self._fingerprints(x, x.shape[0])

    def _perm(self, n: int, device: torch.device) -> torch.Tensor:
        key = (n, str(device))
        perm = self.perms.get(key)
        if perm is None:
            # one cycle through a random order: no sample keeps its own target
            order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
            perm = torch.empty_like(order)
            perm[order] = order.roll(-1)
            perm = self.perms[key] = perm.to(device)
        return perm

    def on_loss(self, ctx: Context, name: str, input: torch.Tensor, target: torch.Tensor, options: dict[str, Any]) -> None:
        if self.done or name not in ("cross_entropy", "nll_loss") or not isinstance(target, torch.Tensor):
            return
        rows, self.rows = self.rows, None
        # one class index per input row (a row of token targets is left out: the same window of text is rightly
        # followed by different tokens in different places)
        if rows is not None and not target.is_floating_point() and target.shape == rows.shape:
            with torch.no_grad():
                labels = target.detach().to(torch.float64)
            if labels.device == rows.device:
                self.pairs.append(torch.stack([rows, labels]))
                self.sizes.append(rows.shape[0])
        if ctx.due and self.pairs:
            pairs, sizes, self.pairs, self.sizes = torch.cat(self.pairs, 1), self.sizes, [], []
            ctx.defer(pairs.reshape(-1), lambda v: self._judge_pairs(ctx, v, sizes))
        if self.noted or not ctx.due:  # the permuted loss: batches of due steps (a sample of the run with every > 1)
            return
        if (target.is_floating_point() or target.dim() != 1 or input.dim() != 2 or input.shape[0] < MIN_BATCH
                or input.shape[1] < 2 or not input.requires_grad or not torch.is_grad_enabled()):
            return
        ignore = int(options.get("ignore_index", -100))
        classes = input.shape[1]
        with torch.no_grad():
            # the first MAX_ROWS rows: a batch of many rows (per-anchor or per-pixel classification) costs no more
            logp, target = input.detach()[:MAX_ROWS].float(), target[:MAX_ROWS]
            if name == "cross_entropy":
                logp = logp.log_softmax(1)
            t = target.long()
            valid = (t != ignore) & (t >= 0) & (t < classes)
            t = torch.where(valid, t, torch.zeros_like(t))
            perm = self._perm(t.shape[0], t.device)
            tp, vp = t[perm], valid & valid[perm]
            real = -(logp.gather(1, t[:, None]).squeeze(1) * vp).sum()
            permuted = -(logp.gather(1, tp[:, None]).squeeze(1) * vp).sum()
            n = vp.sum().clamp(min=1)
            self.pending.append(torch.stack([real / n, permuted / n]))
        self.steps.append((ctx.current, _lr(ctx)))
        if ctx.due:
            values, self.pending = torch.stack(self.pending), []
            ctx.defer(values, lambda v: self._judge(ctx, v))

    def _judge_pairs(self, ctx: Context, values: list[float], sizes: list[int]) -> None:
        """``values``: the input fingerprints of the batches (``sizes`` rows each), then their targets. A fingerprint
        met twice within one batch is no evidence from then on: a duplicated sample (a sampler with replacement), or
        rows the fingerprint cannot tell apart (mostly zeros: the same fingerprint for different inputs)."""
        n = len(values) // 2
        start = 0
        for size in sizes:
            batch = values[start:start + size]
            start += size
            if len(set(batch)) < len(batch):
                twice = {x for x, k in Counter(batch).items() if k > 1}
                self.ambiguous |= twice
                for x in twice:
                    self.seen.pop(x, None)
                    self.back.discard(x)
                    self.conflicts.discard(x)
        for x, y in zip(values[:n], values[n:]):
            if x in self.ambiguous:
                continue
            first = self.seen.get(x)
            if first is None:
                if len(self.seen) < MAX_SEEN:
                    self.seen[x] = y
                continue
            self.back.add(x)
            if y != first:
                self.conflicts.add(x)
        if self.done or len(self.conflicts) < MIN_CONFLICTS or len(self.conflicts) < CONFLICT_SHARE * len(self.back):
            return
        self.done = True
        ctx.report(self.code, f"{len(self.conflicts)} of the {len(self.back)} inputs seen again came with another "
                   "target than the first time: the labels do not belong to their inputs (inputs and labels shuffled "
                   "with different permutations, or indexed with different lists?) (deliberate? --ignore T021)",
                   subject="targets")

    def _judge(self, ctx: Context, values: list[float]) -> None:
        self.history += [(values[k], values[k + 1]) for k in range(0, len(values), 2)]
        n = len(self.history)
        seen = self.steps[:n]
        if self.done or self.noted or not seen or seen[-1][0] - seen[0][0] + 1 < MIN_STEPS:
            return  # fewer than MIN_STEPS optimizer steps (accumulation: many batches per step)
        middle = (seen[0][0] + seen[-1][0]) // 2
        first = next(k for k, (step, _) in enumerate(seen) if step > middle)
        lrs = [lr for _, lr in seen[first:]]
        if not all(math.isfinite(v) and v > 0 for v in lrs) or lrs[-1] > 1.05 * lrs[0]:
            return  # a warm-up (the learning rate still rising) or an unknown rate: the model may not train yet
        late = [(r, p) for r, p in self.history[first:] if math.isfinite(r) and math.isfinite(p)]
        if len(late) < 2:
            return
        gaps = [p - r for r, p in late]
        mean_gap = sum(gaps) / len(gaps)
        real = sum(r for r, _ in late) / len(late)
        half = max(len(late) // 2, 1)
        falling = sum(r for r, _ in late[-half:]) / half < (1 - FALLING) * sum(r for r, _ in late[:half]) / half
        if mean_gap <= TOLERANCE * real and not falling:
            self.noted = True
            ctx.report(self.code, f"over the last {len(late)} of {n} batches the loss with the targets permuted across "
                       f"the batch ({real + mean_gap:.4g}) is no worse than the real one ({real:.4g}): the model has "
                       "not learned to tell inputs apart yet, or the labels carry no information about their inputs "
                       "(inputs and labels shuffled with different permutations?); a note: a slow start looks the "
                       "same", subject="targets", severity=Severity.INFO)


def _lr(ctx: Context) -> float:
    """The first param group's learning rate as a float (nan when it is a tensor: reading it would sync)."""
    groups = ctx.optimizer.param_groups
    lr = groups[0].get("lr") if groups else None
    return float(lr) if isinstance(lr, (int, float)) else math.nan
