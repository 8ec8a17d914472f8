"""T013: clip_grad_norm_ on gradients still multiplied by the GradScaler's scale (before unscale_)."""

from __future__ import annotations

import torch

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.doctor.events import StepEvent


class ClipBeforeUnscale(Check):
    code = "T013"

    def on_clip(self, ctx: Context, params: list[torch.Tensor], max_norm: float) -> None:
        if StepEvent.SCALE in ctx.events and StepEvent.UNSCALE not in ctx.events:
            ctx.report(self.code, f"clip_grad_norm_(max_norm={max_norm:g}) at step {ctx.current} ran on gradients scaled "
                       "by GradScaler.scale before scaler.unscale_(optimizer): it clips to max_norm / scale",
                       subject="optimizer")
