"""SSDLite's extra feature layers, L2Norm and the loc/conf predictors."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation


class L2Norm(nn.Module):
    """Normalises each location's channel vector to unit length, then scales it per channel (init 20).

    (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), scale))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


class ExtraLayer(nn.Sequential):
    """1x1 conv-BN-ReLU6, 3x3 depthwise stride-2 conv-BN-ReLU6, 1x1 conv-BN, ReLU. Halves H and W.

    ``mid_channels`` is the output width in ssds.pytorch ("expand") and half of it in the paper.
    """

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int) -> None:
        super().__init__(
            Conv2dNormActivation(in_channels, mid_channels, kernel_size=1, activation_layer=nn.ReLU6),
            Conv2dNormActivation(
                mid_channels, mid_channels, kernel_size=3, stride=2, groups=mid_channels, activation_layer=nn.ReLU6
            ),
            nn.Conv2d(mid_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def predictor(in_channels: int, out_channels: int, separable: bool) -> nn.Module:
    """A 3x3 conv with bias (ssds.pytorch) or depthwise 3x3-BN-ReLU6 then 1x1 conv (the paper)."""
    if not separable:
        return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
    return nn.Sequential(
        Conv2dNormActivation(in_channels, in_channels, kernel_size=3, groups=in_channels, activation_layer=nn.ReLU6),
        nn.Conv2d(in_channels, out_channels, kernel_size=1),
    )


def init_head_weights(module: nn.Module) -> None:
    """Xavier-uniform convs with zero bias, BN at identity: ssds.pytorch's init for extras and heads."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
