"""SSD augmentation with torchvision.transforms.v2: photometric distortion, zoom-out, IoU crop, flip, resize.

Every pipeline takes ``(image, {"boxes": (N, 4) xyxy pixels, "labels": (N,)})`` with the image as a (3, H, W)
float tensor in [0, 1] or uint8, and returns the same structure at ``size`` x ``size`` with a float image in
[0, 1] and plain tensors; boxes made degenerate by a crop are removed with their labels and per-box flags
("difficult", "iscrowd": ``PER_BOX_FLAGS``) by SanitizeBoundingBoxes.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

# ImageNet mean in [0, 1]: zoom-out fills the canvas with it, so the normalised fill is zero.
FILL = (0.485, 0.456, 0.406)
PER_BOX_FLAGS = ("difficult", "iscrowd")  # (N,) bool beside "labels": VOC difficult objects, COCO crowd regions


def per_box_tensors(inputs: Any) -> tuple[torch.Tensor, ...]:
    """SanitizeBoundingBoxes' ``labels_getter``: the labels and every per-box flag, so that all are filtered with
    the boxes (the default getter would leave the flags misaligned)."""
    target = inputs[1] if isinstance(inputs, (tuple, list)) else inputs
    return tuple(target[k] for k in ("labels", *PER_BOX_FLAGS) if k in target)


def ssd_train_transform(size: int, strong: bool = True) -> v2.Compose:
    """ssds.pytorch's training augmentation. ``strong=False`` keeps only flip and photometric distortion
    (for short CPU runs on synthetic data, where crops mostly cost time)."""
    steps: list[Any] = [v2.ToDtype(torch.float32, scale=True), v2.RandomPhotometricDistort(p=0.5)]
    if strong:
        steps += [
            v2.RandomZoomOut(fill={tv_tensors.Image: FILL, "others": 0}, side_range=(1.0, 4.0), p=0.5),
            v2.RandomIoUCrop(),
        ]
    steps += [
        v2.RandomHorizontalFlip(p=0.5),
        v2.Resize((size, size), antialias=True),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=per_box_tensors),
    ]
    return v2.Compose(steps)


def eval_transform(size: int) -> v2.Compose:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Resize((size, size), antialias=True)])


def apply(transform: v2.Compose, image: torch.Tensor, target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run a v2 pipeline on plain tensors and return plain tensors (image clamped to [0, 1])."""
    h, w = image.shape[-2:]
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
    flags = {k: target[k] for k in PER_BOX_FLAGS if k in target}
    out_image, out = transform(tv_tensors.Image(image), {"boxes": boxes, "labels": target["labels"], **flags})
    result = {"boxes": out["boxes"].as_subclass(torch.Tensor).float(), "labels": out["labels"].long()}
    result.update({k: out[k].bool() for k in flags})
    return out_image.as_subclass(torch.Tensor).clamp(0, 1), result


class Transformed(torch.utils.data.Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """A detection dataset with a v2 pipeline applied to each item."""

    def __init__(self, dataset: Any, transform: v2.Compose) -> None:
        self.dataset, self.transform = dataset, transform
        self.class_names = getattr(dataset, "class_names", ())

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, target = self.dataset[index]
        return apply(self.transform, image, target)
