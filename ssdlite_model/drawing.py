"""Detections drawn on images (torchvision.utils.draw_bounding_boxes), returned as PNG bytes."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def draw_detections(image: torch.Tensor, det: dict[str, torch.Tensor], class_names: Sequence[str], score: float = 0.0,
                    truth: dict[str, torch.Tensor] | None = None) -> bytes:
    """image (3, H, W) in [0, 1]; det {"boxes" (D, 4) xyxy pixels, "scores", "labels"} -> PNG bytes.

    Detections at or above ``score`` are drawn with "name 0.87"; ``truth`` boxes (if given) in white."""
    from torchvision.io import encode_png
    from torchvision.utils import draw_bounding_boxes

    canvas = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    width = max(1, round(max(image.shape[-2:]) / 150))
    if truth is not None and len(truth["boxes"]):
        canvas = draw_bounding_boxes(canvas, truth["boxes"], colors="white", width=width)
    keep = det["scores"] >= score
    boxes, scores, labels = det["boxes"][keep], det["scores"][keep], det["labels"][keep]
    if len(boxes):
        palette = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6"]
        text = [f"{class_names[int(k) - 1] if 0 < int(k) <= len(class_names) else int(k)} {float(s):.2f}" for k, s in zip(labels, scores)]
        colours = [palette[(int(k) - 1) % len(palette)] for k in labels]
        canvas = draw_bounding_boxes(canvas, boxes.float(), labels=text, colors=colours, width=width)
    return bytes(encode_png(canvas).numpy().tobytes())
