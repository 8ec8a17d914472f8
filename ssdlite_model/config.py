"""SSDLite configuration and the presets that reproduce ssds.pytorch and the MobileNetV2 paper."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SSDLiteConfig:
    """Everything that shapes an SSDLite detector.

    Sizes are fractions of the image side so that a config scales to any ``image_size``;
    ``steps`` (pixels) is only for reproducing ssds.pytorch's hand-written prior centres at 300x300.
    """

    num_classes: int = 21  # background included (index 0)
    width_mult: float = 1.0
    image_size: int = 300
    # "ssds": blocks 0..17 as ssds.pytorch builds them; "paper": torchvision's blocks 0..18,
    # block 14 split after its 1x1 expansion (the MobileNetV2 paper's "expansion of layer 15").
    backbone: str = "ssds"
    # Indices into the backbone's block sequence whose outputs feed the heads.
    feature_taps: tuple[int, ...] = (13, 17)
    l2norm_first_tap: bool = True
    extra_channels: tuple[int, ...] = (512, 256, 256, 128)
    # "expand": 1x1 conv straight to the output width (ssds.pytorch);
    # "bottleneck": 1x1 conv to half the output width (the paper / TF object detection API).
    extra_style: str = "expand"
    # "plain": 3x3 conv predictors (ssds.pytorch); "separable": depthwise 3x3 + BN + ReLU6, then 1x1.
    head: str = "plain"
    aspect_ratios: tuple[tuple[int, ...], ...] = ((2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,))
    # s_k for each feature map plus one more for the last sqrt(s_k * s_k+1) box, as image fractions.
    box_sizes: tuple[float, ...] = (0.15, 0.30, 0.45, 0.60, 0.75, 0.90, 1.05)
    steps: tuple[float, ...] | None = (16, 32, 64, 100, 150, 300)
    clip_priors: bool = True
    variances: tuple[float, float] = (0.1, 0.2)
    iou_threshold: float = 0.5
    neg_pos_ratio: int = 3
    score_threshold: float = 0.01
    nms_threshold: float = 0.6
    max_detections: int = 100
    # RGB mean/std applied inside the model to images in [0, 1].
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n_sources = len(self.feature_taps) + len(self.extra_channels)
        problems = []
        if self.num_classes < 2:
            problems.append(f"num_classes must be >= 2 (background included), got {self.num_classes}")
        if self.width_mult <= 0:
            problems.append(f"width_mult must be > 0, got {self.width_mult}")
        if self.image_size < 32:
            problems.append(f"image_size must be >= 32, got {self.image_size}")
        if self.backbone not in ("ssds", "paper"):
            problems.append(f"backbone must be 'ssds' or 'paper', got {self.backbone!r}")
        if self.extra_style not in ("expand", "bottleneck"):
            problems.append(f"extra_style must be 'expand' or 'bottleneck', got {self.extra_style!r}")
        if self.head not in ("plain", "separable"):
            problems.append(f"head must be 'plain' or 'separable', got {self.head!r}")
        if len(self.aspect_ratios) != n_sources:
            problems.append(f"aspect_ratios has {len(self.aspect_ratios)} entries for {n_sources} feature maps")
        if len(self.box_sizes) != n_sources + 1:
            problems.append(f"box_sizes needs {n_sources + 1} entries (one per feature map plus one), got {len(self.box_sizes)}")
        if self.steps is not None and len(self.steps) != n_sources:
            problems.append(f"steps has {len(self.steps)} entries for {n_sources} feature maps")
        if problems:
            raise ValueError("invalid SSDLiteConfig: " + "; ".join(problems))

    @property
    def num_sources(self) -> int:
        return len(self.feature_taps) + len(self.extra_channels)

    @property
    def boxes_per_location(self) -> tuple[int, ...]:
        """Two boxes for ratio 1 (s_k and sqrt(s_k * s_k+1)) plus two per other ratio."""
        return tuple(2 + 2 * len(r) for r in self.aspect_ratios)

    def replace(self, **changes: object) -> "SSDLiteConfig":
        """A copy with ``changes``; a new ``image_size`` drops ssds' 300-pixel ``steps``."""
        if "image_size" in changes and "steps" not in changes and changes["image_size"] != self.image_size:
            changes["steps"] = None
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def ssds_voc() -> SSDLiteConfig:
    """ssds.pytorch's SSDLite-MobileNetV2 for Pascal VOC (21 classes, 300x300): 4,577,792 parameters."""
    return SSDLiteConfig(num_classes=21)


def ssds_coco() -> SSDLiteConfig:
    """ssds.pytorch's SSDLite-MobileNetV2 for COCO (81 classes, 300x300): 9,245,312 parameters."""
    return SSDLiteConfig(num_classes=81)


def paper_coco() -> SSDLiteConfig:
    """The MobileNetV2 paper's SSDLite (Table 6): 320x320, heads on the layer-15 expansion and the
    1280-channel layer, bottleneck extras and depthwise-separable predictors (paper: 4.3M params, 0.8B MAdds)."""
    return SSDLiteConfig(
        num_classes=81,
        image_size=320,
        backbone="paper",
        feature_taps=(14, 19),
        l2norm_first_tap=False,
        extra_style="bottleneck",
        head="separable",
        aspect_ratios=((2, 3),) * 6,
        box_sizes=tuple(round(0.2 + (0.95 - 0.2) * k / 5, 4) for k in range(6)) + (1.0,),
        steps=None,
    )


def tiny(num_classes: int = 4, image_size: int = 96) -> SSDLiteConfig:
    """A fast configuration for tests and demos: width 0.35, small images, small extras."""
    return SSDLiteConfig(
        num_classes=num_classes,
        width_mult=0.35,
        image_size=image_size,
        extra_channels=(128, 64, 64, 32),
        steps=None,
    )


def feature_map_size(image_size: int, downsamplings: int) -> int:
    """Side of a map after ``downsamplings`` 3x3 stride-2 convs with padding 1 (each is ceil(n / 2))."""
    size = image_size
    for _ in range(downsamplings):
        size = math.ceil(size / 2)
    return size
