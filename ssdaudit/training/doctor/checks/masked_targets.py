"""T020: a loss over positions a hand-written mask selected, whose targets hold one value at every step.

A padding mask written the wrong way round (``keep = labels == pad`` instead of ``!=``) keeps only padding
positions: every target the loss learns from is the padding id. T011 sees the same thing when the mask goes through
``ignore_index``; here the mask is written by hand, in one of two places:

* **before the loss**: ``F.cross_entropy(logits.view(-1, V)[keep], labels.view(-1)[keep])`` (or ``masked_select``).
  Evidence: the loss's input was made by boolean indexing or ``masked_select`` (its autograd node, looking through
  shape-only ops), and the targets it got are the kept ones;
* **after a per-position loss**: ``l = F.cross_entropy(..., reduction="none")`` then ``(l * keep).sum() /
  keep.sum()``, ``torch.where(keep, l, 0)``, ``l[keep].mean()`` or ``l.masked_select(keep)``. Whatever the form, the
  positions the mask dropped get no gradient: a hook on the loss's input (on due steps only) reads, per position,
  whether any gradient reached its logits. Evidence: the targets of the positions with a gradient, and those of the
  positions without one (a mask dropped them, holding other values).

Either way the finding needs, at ``STEPS`` due steps in a row, the kept targets (two or more) all holding one value,
the same value every time, while the input has two classes or more (and, after the loss, the dropped positions
holding another value). The class counts are computed on the device and read with the step's other values (no host
sync of its own).
"""

from __future__ import annotations

from typing import Any

import torch

from ssdaudit.core.findings import Location
from ssdaudit.core.frames import user_location
from ssdaudit.core.guard import describe, raise_internal
from ssdaudit.core.patches import compile_disabled
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
        self.dropped = 0  # positions a mask applied after the loss dropped in them
        self.done = False

    def on_loss(self, ctx: Context, name: str, input: torch.Tensor, target: torch.Tensor, options: dict[str, Any]) -> None:
        if self.done or name not in ("cross_entropy", "nll_loss") or not isinstance(target, torch.Tensor):
            return
        if target.is_floating_point() or not ctx.due or not torch.is_grad_enabled() or input.dim() < 2:
            return
        if target.numel() < 2 or input.shape[1] < 2:
            return
        ignore = int(options.get("ignore_index", -100))
        classes = input.shape[1]
        if options.get("reduction") == "none":
            if input.requires_grad and tuple(target.shape) == (input.shape[0], *input.shape[2:]):
                self._hook_weights(ctx, name, input, target, ignore, user_location())
            return
        if not producer(input).startswith(MASKED):
            return
        where = user_location()  # the loss call: judged at the end of the step, the finding points here
        with torch.no_grad():
            counts = class_counts(target, classes, ignore)
        n, step = target.numel(), ctx.current
        ctx.defer(counts, lambda c: self._judge(ctx, name, c, None, n, step, where))

    def _hook_weights(self, ctx: Context, name: str, input: torch.Tensor, target: torch.Tensor, ignore: int,
                      where: Location | None) -> None:
        """A per-position loss (``reduction="none"``): when the backward reaches ``input``, the targets of the
        positions whose logits got a gradient and of those that got none are counted on the device."""
        classes, step = input.shape[1], ctx.current
        handles: list[Any] = []
        target = target.detach()

        def hook(grad: torch.Tensor) -> None:
            try:
                handles.pop().remove()  # once: the first backward through this loss
                with torch.no_grad():
                    weighted = grad.ne(0).any(dim=1)  # (N, d1, ...): some gradient reached the position's logits
                    t = target.long()
                    outside = torch.full_like(t, -1)  # counted with the ignored (last entry)
                    kept = class_counts(torch.where(weighted, t, outside), classes, ignore)
                    dropped = class_counts(torch.where(weighted, outside, t), classes, ignore)
                ctx.defer(torch.cat([kept, dropped]),
                          lambda c: self._judge(ctx, f"{name}(reduction='none')", c[:classes + 1], c[classes + 1:],
                                                int(target.numel()), step, where))
            except Exception as exc:  # never into the user's backward
                if raise_internal():
                    raise
                self.done = True
                ctx.internal_errors.append(describe("MaskKeepsOneTargetValue (T020) gradient hook", exc))

        handles.append(input.register_hook(compile_disabled(hook)))  # type: ignore[no-untyped-call]

    def _judge(self, ctx: Context, name: str, counts: list[float], dropped: list[float] | None, n: int,
               step: int, where: Location | None) -> None:
        present = [c for c, k in enumerate(counts[:-1]) if k > 0]
        if len(present) != 1 or counts[present[0]] < 2:
            self.value, self.run, self.kept, self.dropped = None, 0, 0, 0  # mixed (or all ignored: T011's)
            return
        value = present[0]
        if dropped is not None and not any(k > 0 for c, k in enumerate(dropped[:-1]) if c != value):
            # a per-position loss whose positions all hold one value, or one weighted only where they do not
            # differ: no mask chose among target values here
            self.value, self.run, self.kept, self.dropped = None, 0, 0, 0
            return
        if value != self.value:
            self.value, self.run, self.kept, self.dropped = value, 0, 0, 0
        self.run += 1
        self.kept += int(counts[value])
        self.dropped += int(sum(dropped[:-1])) if dropped is not None else 0
        if self.run >= STEPS and not self.done:
            self.done = True
            if dropped is None:
                ctx.report(self.code, f"F.{name} got positions selected by a mask (boolean indexing) whose "
                           f"{self.kept} targets over {self.run} steps up to step {step} all equal {value}: the mask "
                           f"keeps only the positions of one target value (a padding mask the wrong way round, == "
                           f"instead of !=?); {n} positions kept at the last", subject="loss mask", location=where)
            else:
                ctx.report(self.code, f"F.{name}'s per-position loss reached the gradient only through the "
                           f"{self.kept} positions whose target is {value} over {self.run} steps up to step {step}; "
                           f"the {self.dropped} positions with other targets got none: the mask applied to the "
                           "loss keeps only the positions of one target value (a padding mask the wrong way round, "
                           "== instead of !=?)", subject="loss mask", location=where)
