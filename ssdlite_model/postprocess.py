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
    per image {"boxes": (D, 4) xyxy pixels, "scores": (D,), "labels": (D,) in 1..C-1}, best first.

    The whole batch at once: decode, each (image, class)'s best ``per_class_candidates`` priors (ssds.pytorch's
    top_k: an untrained model would otherwise send every prior of every class into NMS), one ``batched_nms`` over
    image x class groups, then each image's best ``max_detections``. No per-image loop and no host sync until the
    final split, so it stays on the GPU for a whole batch."""
    n, p, c = conf.shape
    if n == 0:
        return []
    scores = conf.softmax(dim=-1)[:, :, 1:]  # (N, P, C-1): background dropped
    sizes = torch.tensor([[w, h, w, h] for h, w in image_sizes], dtype=loc.dtype, device=loc.device)  # (N, 4)
    boxes = coder.decode(loc, priors.unsqueeze(0)).clamp(0.0, 1.0) * sizes[:, None, :]  # (N, P, 4) pixels
    k = min(per_class_candidates, p)
    top_scores, top_idx = scores.topk(k, dim=1)  # (N, k, C-1)
    image_idx, rank_idx, class_idx = (top_scores > score_threshold).nonzero(as_tuple=True)
    prior_idx = top_idx[image_idx, rank_idx, class_idx]
    cand_boxes = boxes[image_idx, prior_idx]
    cand_scores = top_scores[image_idx, rank_idx, class_idx]
    cand_labels = class_idx + 1
    kept = batched_nms(cand_boxes.float(), cand_scores.float(), image_idx * c + cand_labels, nms_threshold)
    # kept is best-first over the batch; a stable sort by image keeps each image's detections best-first
    kept = kept[torch.sort(image_idx[kept], stable=True).indices]
    kept_image = image_idx[kept]
    counts = torch.bincount(kept_image, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(kept), device=kept.device) - starts[kept_image]
    kept = kept[rank < max_detections]
    per_image = torch.bincount(image_idx[kept], minlength=n).clamp(max=max_detections).tolist()  # the one sync
    results = []
    for b, s_, l_ in zip(torch.split(cand_boxes[kept], per_image), torch.split(cand_scores[kept], per_image),
                         torch.split(cand_labels[kept], per_image)):
        results.append({"boxes": b, "scores": s_, "labels": l_})
    return results
