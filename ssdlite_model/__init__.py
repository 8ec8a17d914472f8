"""SSDLite with a MobileNetV2 backbone, built the way ssds.pytorch builds it: ssdaudit's reference model."""

from .boxes import BoxCoder, PriorMatcher
from .config import SSDLiteConfig, paper_coco, ssds_coco, ssds_voc, tiny
from .detector import SSDLite, build_ssdlite
from .loss import MultiBoxLoss
from .priors import generate_priors

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
