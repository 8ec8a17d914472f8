"""T022: a loss that is identically zero: ``F.cross_entropy`` over a single class.

``log_softmax`` over one logit is 0 whatever the logit, so cross-entropy on a ``(B, 1)`` (or ``(B, 1, ...)``)
input gives exactly 0 for any target (a class index, necessarily 0, or a probability), and every gradient through
it is exactly 0. The evidence is the input's shape at the loss call: no host sync.
"""

from __future__ import annotations

from typing import Any

import torch

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context


class LossIdenticallyZero(Check):
    code = "T022"

    def on_loss(self, ctx: Context, name: str, input: torch.Tensor, target: torch.Tensor, options: dict[str, Any]) -> None:
        if name != "cross_entropy" or input.dim() < 2 or input.shape[1] != 1 or input.shape[0] == 0:
            return
        if not (input.requires_grad and torch.is_grad_enabled()):
            return
        kind = "probabilities" if isinstance(target, torch.Tensor) and target.is_floating_point() else "class indices"
        ctx.report(self.code, f"F.cross_entropy got an input of shape {tuple(input.shape)}: one class, so its "
                   f"log_softmax is 0 and the loss is exactly 0 for any target ({kind} here) with every gradient 0; "
                   "nothing learns from it (one output per sample: binary_cross_entropy_with_logits or mse_loss)",
                   subject="loss")
