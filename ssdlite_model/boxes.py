"""Box coding with variances and IoU matching of ground truth to priors."""

from __future__ import annotations

import torch
from torchvision.ops import box_convert, box_iou


class BoxCoder:
    """Encodes xyxy boxes against (cx, cy, w, h) priors as SSD offsets, and decodes them back.

    All boxes are image fractions. Offsets: ((c - c_p) / (v0 * wh_p), log(wh / wh_p) / v1).
    """

    def __init__(self, variances: tuple[float, float] = (0.1, 0.2)) -> None:
        self.variances = variances

    def encode(self, boxes: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
        """(..., 4) xyxy boxes and (..., 4) cxcywh priors -> (..., 4) offsets."""
        cxcywh = box_convert(boxes, "xyxy", "cxcywh")
        centre = (cxcywh[..., :2] - priors[..., :2]) / (self.variances[0] * priors[..., 2:])
        size = torch.log(cxcywh[..., 2:].clamp(min=1e-6) / priors[..., 2:]) / self.variances[1]
        return torch.cat([centre, size], dim=-1)

    def decode(self, offsets: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
        """(..., 4) offsets and (..., 4) cxcywh priors -> (..., 4) xyxy boxes."""
        centre = priors[..., :2] + offsets[..., :2] * self.variances[0] * priors[..., 2:]
        size = priors[..., 2:] * torch.exp(offsets[..., 2:] * self.variances[1])
        boxes: torch.Tensor = box_convert(torch.cat([centre, size], dim=-1), "cxcywh", "xyxy")
        return boxes


class PriorMatcher:
    """Assigns each prior a ground-truth box: IoU >= threshold, and every ground-truth box is forced
    onto its best prior (so none goes unmatched)."""

    def __init__(self, iou_threshold: float = 0.5) -> None:
        self.iou_threshold = iou_threshold

    def __call__(self, gt_boxes: torch.Tensor, priors_xyxy: torch.Tensor) -> torch.Tensor:
        """(G, 4) xyxy ground truth, (P, 4) xyxy priors -> (P,) index into gt, or -1 for background."""
        matches = torch.full((priors_xyxy.shape[0],), -1, dtype=torch.long, device=priors_xyxy.device)
        if gt_boxes.numel() == 0:
            return matches
        iou = box_iou(gt_boxes, priors_xyxy)  # (G, P)
        best_iou, best_gt = iou.max(dim=0)
        matches = torch.where(best_iou >= self.iou_threshold, best_gt, matches)
        best_prior = iou.argmax(dim=1)  # (G,)
        # A prior that is the best of two boxes goes to one of them; every box keeps at least one prior
        # unless two boxes share their only best prior (rare: identical boxes).
        matches[best_prior] = torch.arange(gt_boxes.shape[0], device=priors_xyxy.device)
        return matches
