"""SSDLite with a MobileNetV2 backbone, built the way ssds.pytorch builds it: ssdaudit's reference model."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "BoxCoder",
    "MultiBoxLoss",
    "PriorMatcher",
    "SSDLite",
    "SSDLiteConfig",
    "build_ssdlite",
    "generate_priors",
    "paper_coco",
    "ssds_coco",
    "ssds_voc",
    "tiny",
]

if TYPE_CHECKING:
    from .boxes import BoxCoder, PriorMatcher
    from .config import SSDLiteConfig, paper_coco, ssds_coco, ssds_voc, tiny
    from .detector import SSDLite, build_ssdlite
    from .loss import MultiBoxLoss
    from .priors import generate_priors

# Lazy: the `ssdlite` command (its --help, and the one-line "needs PyTorch" error) must start without torch.
_HOMES = {
    "BoxCoder": "boxes", "PriorMatcher": "boxes", "SSDLiteConfig": "config", "paper_coco": "config",
    "ssds_coco": "config", "ssds_voc": "config", "tiny": "config", "SSDLite": "detector", "build_ssdlite": "detector",
    "MultiBoxLoss": "loss", "generate_priors": "priors",
}


def __getattr__(name: str) -> object:
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module 'ssdlite_model' has no attribute {name!r}")
