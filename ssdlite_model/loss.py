"""MultiBox loss: smooth-L1 on matched priors plus cross-entropy with hard negative mining."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert

from .boxes import BoxCoder, PriorMatcher


class MultiBoxLoss(nn.Module):
    """SSD's loss. Both parts are summed and divided by the number of positive priors in the batch
    (at least 1, so a batch without objects gives a finite loss made of negatives only).

    Negatives are the background priors with the highest confidence loss, ``neg_pos_ratio`` per
    positive in each image (at least ``neg_pos_ratio`` when an image has no objects).
    """

    def __init__(self, iou_threshold: float = 0.5, neg_pos_ratio: int = 3, variances: tuple[float, float] = (0.1, 0.2)) -> None:
        super().__init__()
        self.matcher = PriorMatcher(iou_threshold)
        self.coder = BoxCoder(variances)
        self.neg_pos_ratio = neg_pos_ratio

    def match(self, priors: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Priors (P, 4) cxcywh; targets' boxes (G, 4) xyxy fractions and labels (G,) in 1..C-1. Boxes flagged
        "difficult" (VOC) or "iscrowd" (COCO) take no part, as in ssds.pytorch (keep_difficult=False) and
        torchvision's COCO references.

        Returns (N, P, 4) regression targets and (N, P) class targets (0 = background).
        """
        priors_xyxy = box_convert(priors, "cxcywh", "xyxy")
        loc_t, cls_t = [], []
        for t in targets:
            boxes, labels = t["boxes"].to(priors), t["labels"].to(priors.device)
            ignored = _ignored(t)
            if ignored is not None:
                keep = ~ignored.to(priors.device)
                boxes, labels = boxes[keep], labels[keep]
            idx = self.matcher(boxes, priors_xyxy)
            matched = boxes[idx.clamp(min=0)] if boxes.numel() else torch.zeros_like(priors)
            loc_t.append(self.coder.encode(matched, priors))
            cls = labels[idx.clamp(min=0)] if boxes.numel() else torch.zeros(len(priors), dtype=torch.long, device=priors.device)
            cls_t.append(torch.where(idx >= 0, cls, torch.zeros_like(cls)))
        return torch.stack(loc_t), torch.stack(cls_t)

    def mine_negatives(self, conf_loss: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        """(N, P) per-prior loss and positive mask -> (N, P) mask of hard negatives."""
        loss = conf_loss.detach().masked_fill(positive, float("-inf"))
        num_neg = self.neg_pos_ratio * positive.sum(dim=1, keepdim=True).clamp(min=1)
        num_neg = torch.minimum(num_neg, (~positive).sum(dim=1, keepdim=True))
        rank = loss.argsort(dim=1, descending=True).argsort(dim=1)
        return rank < num_neg

    def forward(
        self, loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor, targets: list[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """loc (N, P, 4), conf (N, P, C), priors (P, 4) -> {"loss", "loc", "conf"} scalars."""
        loc_t, cls_t = self.match(priors, targets)
        positive = cls_t > 0
        num_pos = positive.sum().clamp(min=1).to(loc.dtype)
        loc_loss = F.smooth_l1_loss(loc[positive], loc_t[positive].to(loc.dtype), reduction="sum")
        conf_loss = F.cross_entropy(conf.flatten(0, 1), cls_t.flatten(), reduction="none").view_as(cls_t)
        negative = self.mine_negatives(conf_loss, positive)
        cls_loss = conf_loss[positive | negative].sum()
        loc_loss, cls_loss = loc_loss / num_pos, cls_loss / num_pos
        return {"loss": loc_loss + cls_loss, "loc": loc_loss, "conf": cls_loss}


def targets_to_fractions(targets: list[dict[str, torch.Tensor]], height: int, width: int) -> list[dict[str, torch.Tensor]]:
    """Scale targets' (G, 4) xyxy pixel boxes to image fractions, as the loss expects."""
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    return [{**t, "boxes": t["boxes"].float() / scale} for t in targets]


def _ignored(target: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """(G,) bool: the boxes training leaves out (difficult or crowd), or None when the target flags none."""
    flags = [target[k].bool() for k in ("difficult", "iscrowd") if k in target]
    return torch.stack(flags).any(dim=0) if flags else None
