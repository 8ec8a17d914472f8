"""Built-in reference models to compare against."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ssdaudit.registration.ssdlite_adapter import ssds_reference as _ssds


def _torchvision_ssdlite() -> nn.Module:
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    model: nn.Module = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    return model


BUILTIN_REFERENCES: dict[str, tuple[str, Callable[[], nn.Module]]] = {
    "ssds-voc": ("ssds.pytorch SSDLite-MobileNetV2, VOC (21 classes): 4,577,792 parameters", _ssds("ssds_voc")),
    "ssds-coco": ("ssds.pytorch SSDLite-MobileNetV2, COCO (81 classes): 9,245,312 parameters", _ssds("ssds_coco")),
    "torchvision-ssdlite": ("torchvision ssdlite320_mobilenet_v3_large (91 classes)", _torchvision_ssdlite),
}


def load_reference(spec: str, device: str = "cpu") -> tuple[Any, str]:
    """(model or state_dict, name) for a built-in name, a checkpoint, or file.py[:NAME] / package.module:NAME."""
    from ssdaudit.core.errors import LoadError
    from ssdaudit.checkpoints.formats import load_checkpoint_shapes
    from ssdaudit.core.targets import TargetSpec, load_target

    if spec in BUILTIN_REFERENCES:
        import torch

        # Only counts and shapes are compared: the meta device skips allocating and initialising weights.
        with torch.device("meta"):
            return BUILTIN_REFERENCES[spec][1](), spec
    parsed = TargetSpec.parse(spec)
    if parsed.kind == "checkpoint":
        return load_checkpoint_shapes(parsed.path)[0], spec
    if parsed.kind in ("file", "library") or parsed.name:
        return load_target(parsed, device=device, want_input=False).model, spec
    names = ", ".join(BUILTIN_REFERENCES)
    raise LoadError(f"unknown reference {spec!r}: use one of {names}, a file.py[:NAME] or a checkpoint")
