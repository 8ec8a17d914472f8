"""T012: the first weighted layer of a training forward sees inputs far from unit scale (0..255 pixels).

Measured at the first Conv/Linear of each root forward, so a model that normalises its own input inside forward()
is measured after that; a forward whose first weighted module is anything else (an Embedding, a norm layer) is
not measured. Only the first ``CHECKS`` training forwards of due steps are measured (read with the step's other values).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context

CHECKS = 3
SCALE = 10.0  # mean |x| an order of magnitude above unit scale


class UnnormalisedInputs(Check):
    code = "T012"

    def __init__(self) -> None:
        self.armed = False
        self.checked = 0

    def on_module_pre(self, ctx: Context, module: nn.Module, args: tuple[Any, ...], root: bool) -> None:
        if self.checked >= CHECKS:
            return
        if root:
            self.armed = torch.is_grad_enabled() and module.training and ctx.due
        if not self.armed or not module._parameters:
            return
        self.armed = False
        x = args[0] if args else None
        if not isinstance(module, (_ConvNd, nn.Linear)) or not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return
        self.checked += 1
        self.module_calls_done = self.checked >= CHECKS
        with torch.no_grad():
            xf = x.detach().float()
            stats = torch.stack([xf.abs().mean(), xf.min(), xf.max()])
        name = ctx.name_of(module)
        ctx.defer(stats, lambda v: self._judge(ctx, name, *v))

    def _judge(self, ctx: Context, name: str, mean_abs: float, lo: float, hi: float) -> None:
        if mean_abs > SCALE:
            pixels = " (looks like 0..255 pixels)" if lo >= 0 and hi <= 255 and hi > 100 else ""
            ctx.report(self.code, f"the first layer {name} sees inputs with mean |x| {mean_abs:.3g}, range "
                       f"{lo:.3g}..{hi:.3g}{pixels}: not normalised (deliberate? --ignore T012, or watch(..., ignore=['T012']))",
                       path=name)
