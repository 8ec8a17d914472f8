"""The SSDLite detector: MobileNetV2 taps, extra layers, loc/conf predictors and priors."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .backbone import block_downsamplings, block_out_channels, load_imagenet_weights, mobilenet_v2_blocks
from .boxes import BoxCoder
from .config import SSDLiteConfig, feature_map_size
from .heads import ExtraLayer, L2Norm, init_head_weights, predictor
from .postprocess import postprocess_detections
from .priors import generate_priors


class SSDLite(nn.Module):
    """SSDLite with a MobileNetV2 backbone.

    Attributes (state_dict prefixes): ``backbone`` (the MobileNetV2 blocks), ``norm`` (L2Norm on the
    first tap, or Identity), ``extras``, ``loc``, ``conf``; ``priors`` is a non-persistent buffer, so
    it follows ``.to()`` and stays out of checkpoints.

    Images are (N, 3, H, W) RGB floats in [0, 1]; the model normalises them itself.
    """

    priors: torch.Tensor  # (P, 4) cx, cy, w, h as image fractions (a buffer)
    image_mean: torch.Tensor  # (1, 3, 1, 1)
    image_std: torch.Tensor  # (1, 3, 1, 1)

    def __init__(self, config: SSDLiteConfig, backbone_weights: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.config = config
        blocks = mobilenet_v2_blocks(config, backbone_weights)
        bad = [t for t in config.feature_taps if not 0 <= t < len(blocks)]
        if bad:
            raise ValueError(f"feature_taps {bad} outside the backbone's {len(blocks)} blocks")
        self.backbone = nn.Sequential(*blocks)
        tap_channels = [block_out_channels(blocks[t]) for t in config.feature_taps]
        self.norm = L2Norm(tap_channels[0]) if config.l2norm_first_tap else nn.Identity()

        extra_channels = [_scaled(c, config.width_mult) for c in config.extra_channels]
        extras, in_ch = [], tap_channels[-1]
        for out_ch in extra_channels:
            mid = out_ch if config.extra_style == "expand" else out_ch // 2
            extras.append(ExtraLayer(in_ch, out_ch, mid))
            in_ch = out_ch
        self.extras = nn.ModuleList(extras)

        source_channels = tap_channels + extra_channels
        separable = config.head == "separable"
        boxes = config.boxes_per_location
        self.loc = nn.ModuleList(predictor(c, b * 4, separable) for c, b in zip(source_channels, boxes))
        self.conf = nn.ModuleList(predictor(c, b * config.num_classes, separable) for c, b in zip(source_channels, boxes))
        for part in (self.extras, self.loc, self.conf):
            init_head_weights(part)

        downs = block_downsamplings(blocks)
        tap_downs = [downs[t] for t in config.feature_taps]
        extra_downs = [tap_downs[-1] + i + 1 for i in range(len(extra_channels))]
        self.feature_map_sizes = [feature_map_size(config.image_size, d) for d in tap_downs + extra_downs]
        self.register_buffer("priors", generate_priors(config, self.feature_map_sizes), persistent=False)
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)
        self.box_coder = BoxCoder(config.variances)

    def sources(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) images in [0, 1] -> the feature maps the predictors read, largest first."""
        x = (images - self.image_mean) / self.image_std
        taps, sources = set(self.config.feature_taps), list[torch.Tensor]()
        for i, block in enumerate(self.backbone):
            x = block(x)
            if i in taps:
                sources.append(self.norm(x) if not sources else x)
        for layer in self.extras:
            x = layer(x)
            sources.append(x)
        return sources

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) images in [0, 1] -> loc (N, P, 4) offsets and conf (N, P, C) logits."""
        sources = self.sources(images)
        sizes = [s.shape[-1] for s in sources]
        if sizes != self.feature_map_sizes:
            raise ValueError(
                f"input {tuple(images.shape[-2:])} gives feature maps {sizes}, but the priors were made for "
                f"{self.feature_map_sizes} ({self.config.image_size}x{self.config.image_size} images): resize the input"
            )
        n = images.shape[0]
        loc = torch.cat([h(s).permute(0, 2, 3, 1).reshape(n, -1, 4) for h, s in zip(self.loc, sources)], dim=1)
        conf = torch.cat(
            [h(s).permute(0, 2, 3, 1).reshape(n, -1, self.config.num_classes) for h, s in zip(self.conf, sources)], dim=1
        )
        return loc, conf

    @torch.no_grad()
    def detect(
        self, images: torch.Tensor, score_threshold: float | None = None, max_detections: int | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """(N, 3, H, W) images in [0, 1] -> per image {"boxes" (D, 4) xyxy pixels, "scores" (D,), "labels" (D,)}.

        Runs in whatever mode the model is in; call ``.eval()`` first for inference.
        """
        loc, conf = self(images)
        h, w = images.shape[-2:]
        c = self.config
        return postprocess_detections(
            loc,
            conf,
            self.priors,
            [(h, w)] * images.shape[0],
            self.box_coder,
            score_threshold=c.score_threshold if score_threshold is None else score_threshold,
            nms_threshold=c.nms_threshold,
            max_detections=c.max_detections if max_detections is None else max_detections,
        )


def _scaled(channels: int, width_mult: float) -> int:
    """Extra-layer widths follow the backbone's width multiplier (multiples of 8, at least 16)."""
    if width_mult == 1.0:
        return channels
    return max(16, int(channels * width_mult + 4) // 8 * 8)


def build_ssdlite(config: SSDLiteConfig, backbone_weights: str | Path | None = None) -> SSDLite:
    """Build an SSDLite; ``backbone_weights`` is a local torchvision mobilenet_v2 ImageNet state_dict."""
    weights = load_imagenet_weights(backbone_weights) if backbone_weights is not None else None
    return SSDLite(config, weights)
