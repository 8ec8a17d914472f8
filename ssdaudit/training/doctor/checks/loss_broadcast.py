"""T010: an elementwise loss whose input and target have different shapes that broadcast."""

from __future__ import annotations

from typing import Any

import torch

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context

ELEMENTWISE = frozenset({"mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy",
                         "binary_cross_entropy_with_logits", "soft_margin_loss", "poisson_nll_loss"})


class LossBroadcast(Check):
    code = "T010"

    def on_loss(self, ctx: Context, name: str, input: torch.Tensor, target: torch.Tensor, options: dict[str, Any]) -> None:
        if name not in ELEMENTWISE or not isinstance(target, torch.Tensor) or input.shape == target.shape:
            return
        try:
            shape = torch.broadcast_shapes(input.shape, target.shape)  # type: ignore[no-untyped-call]
        except RuntimeError:
            return  # the loss raises by itself
        ctx.report(self.code, f"F.{name} input {tuple(input.shape)} and target {tuple(target.shape)} broadcast to "
                   f"{tuple(shape)}: every prediction is compared with every target", subject=f"loss {name}")
