"""MobileNetV2 backbone blocks, built from torchvision's MobileNetV2 the way ssds.pytorch lays them out."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import mobilenet_v2
from torchvision.ops.misc import Conv2dNormActivation

from .config import SSDLiteConfig


def mobilenet_v2_blocks(config: SSDLiteConfig, weights: dict[str, torch.Tensor] | None = None) -> list[nn.Module]:
    """The backbone as a list of blocks; ``config.feature_taps`` index into it.

    ``"ssds"``: blocks 0..17 of torchvision's ``mobilenet_v2().features`` with ssds.pytorch's two
    differences: a plain ReLU in the stem and a 1x1 expansion conv + BN kept in the first (t=1)
    inverted residual (1,088 parameters more at width 1.0). No final 1x1 conv to 1280.
    ``"paper"``: all 19 blocks, block 14 split after its expansion so that the head can tap it.
    ``weights``: an ImageNet ``mobilenet_v2`` state_dict (torchvision key names) to start from.
    """
    net = mobilenet_v2(weights=None, width_mult=config.width_mult)
    if weights is not None:
        net.load_state_dict(weights)
    blocks = list(net.features)
    if config.backbone == "ssds":
        blocks[0][2] = nn.ReLU(inplace=True)
        blocks[1] = _with_expansion(blocks[1], blocks[0].out_channels)
        return blocks[:18]
    expansion, rest = blocks[14].conv[0], nn.Sequential(*blocks[14].conv[1:])
    return blocks[:14] + [expansion, rest] + blocks[15:]


def _with_expansion(block: nn.Module, channels: int) -> nn.Module:
    """Give a t=1 inverted residual the 1x1 expansion conv (channels -> channels) that torchvision drops."""
    expand = Conv2dNormActivation(channels, channels, kernel_size=1, activation_layer=nn.ReLU6)
    nn.init.kaiming_normal_(expand[0].weight, mode="fan_out")
    block.conv = nn.Sequential(expand, *block.conv)  # type: ignore[misc]  # an nn.Sequential iterates its layers
    return block


def block_downsamplings(blocks: list[nn.Module]) -> list[int]:
    """For each block, how many stride-2 convs the input has passed through once it leaves it."""
    counts, total = [], 0
    for block in blocks:
        total += sum(1 for m in block.modules() if isinstance(m, nn.Conv2d) and m.stride[0] == 2)
        counts.append(total)
    return counts


def block_out_channels(block: nn.Module) -> int:
    """Output channels of a block: those of its last conv."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def load_imagenet_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local torchvision ``mobilenet_v2`` ImageNet state_dict (nothing is downloaded)."""
    from ssdaudit import load_object
    from ssdaudit.core.errors import LoadError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    try:
        state = load_object(path, mmap=False).obj  # the project's one safe reader (weights only)
    except LoadError as exc:
        raise ValueError(f"cannot read backbone weights: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not any(k.startswith("features.") for k in state):
        raise ValueError(f"{path} is not a torchvision mobilenet_v2 state_dict (no 'features.*' keys)")
    return state
