"""Turning SSDLite's raw outputs into detections: decode, score threshold, per-class NMS, top-k."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from .boxes import BoxCoder


def postprocess_detections(
    loc: torch.Tensor,
    conf: torch.Tensor,
    priors: torch.Tensor,
    image_sizes: list[tuple[int, int]],
    coder: BoxCoder,
    score_threshold: float = 0.01,
    nms_threshold: float = 0.6,
    max_detections: int = 100,
    per_class_candidates: int = 200,
) -> list[dict[str, torch.Tensor]]:
    """loc (N, P, 4), conf (N, P, C) logits, priors (P, 4) cxcywh, image_sizes [(H, W)] ->
    per image {"boxes": (D, 4) xyxy pixels, "scores": (D,), "labels": (D,) in 1..C-1}, best first."""
    scores_all = conf.softmax(dim=-1)
    results = []
    for i, (h, w) in enumerate(image_sizes):
        boxes = coder.decode(loc[i], priors).clamp(0.0, 1.0)
        boxes = boxes * torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        scores = scores_all[i, :, 1:]  # (P, C-1): background dropped
        # Each class's best ``per_class_candidates`` priors only (ssds.pytorch's top_k): an untrained or
        # uncertain model would otherwise send every prior of every class into NMS.
        k = min(per_class_candidates, scores.shape[0])
        top_scores, top_idx = scores.topk(k, dim=0)  # (k, C-1)
        keep = top_scores > score_threshold
        rank_idx, class_idx = keep.nonzero(as_tuple=True)
        prior_idx = top_idx[rank_idx, class_idx]
        cand_boxes, cand_scores = boxes[prior_idx], top_scores[rank_idx, class_idx]
        cand_labels = class_idx + 1
        kept = batched_nms(cand_boxes.float(), cand_scores.float(), cand_labels, nms_threshold)[:max_detections]
        results.append({"boxes": cand_boxes[kept], "scores": cand_scores[kept], "labels": cand_labels[kept]})
    return results
