"""Counting an SSDLite's parameters per part and its multiply-adds."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

PARTS = ("backbone", "norm", "extras", "loc", "conf")


def params_per_part(model: nn.Module) -> dict[str, int]:
    """Registered parameters of each top-level part, plus "total"."""
    counts = {part: 0 for part in PARTS}
    for name, p in model.named_parameters():
        top = name.split(".", 1)[0]
        counts[top] = counts.get(top, 0) + p.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def count_macs(model: nn.Module, image_size: int) -> int:
    """Multiply-adds of one forward pass on a 1x3xSxS image (convolutions and matmuls)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2
