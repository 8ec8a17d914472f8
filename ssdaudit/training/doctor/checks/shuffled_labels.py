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
yet) or while the real loss still falls by ``FALLING`` within the judged half.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context

MIN_STEPS = 40
MIN_BATCH = 8
TOLERANCE = 0.05
FALLING = 0.05  # the real loss still falling by this fraction within the judged half: the model is learning, wait


class LabelsIndependentOfInputs(Check):
    code = "T021"

    def __init__(self) -> None:
        self.pending: list[torch.Tensor] = []  # (2,) real and permuted loss per batch, on the device, unread
        self.history: list[tuple[float, float]] = []
        self.steps: list[tuple[int, float]] = []  # per batch: its optimizer step, the first group's learning rate
        self.perms: dict[tuple[int, str], torch.Tensor] = {}
        self.done = False

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
        if (target.is_floating_point() or target.dim() != 1 or input.dim() != 2 or input.shape[0] < MIN_BATCH
                or input.shape[1] < 2 or not input.requires_grad or not torch.is_grad_enabled()):
            return
        ignore = int(options.get("ignore_index", -100))
        classes = input.shape[1]
        with torch.no_grad():
            logp = input.detach().float()
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

    def _judge(self, ctx: Context, values: list[float]) -> None:
        self.history += [(values[k], values[k + 1]) for k in range(0, len(values), 2)]
        n = len(self.history)
        seen = self.steps[:n]
        if self.done or not seen or seen[-1][0] - seen[0][0] + 1 < MIN_STEPS:
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
            self.done = True
            ctx.report(self.code, f"over the last {len(late)} of {n} batches the loss with the targets permuted across "
                       f"the batch ({real + mean_gap:.4g}) is no worse than the real one ({real:.4g}): the labels "
                       "carry no information about their inputs (inputs and labels shuffled with different "
                       "permutations, or indexed with different lists?) (deliberate? --ignore T021)",
                       subject="targets")


def _lr(ctx: Context) -> float:
    """The first param group's learning rate as a float (nan when it is a tensor: reading it would sync)."""
    groups = ctx.optimizer.param_groups
    lr = groups[0].get("lr") if groups else None
    return float(lr) if isinstance(lr, (int, float)) else math.nan
