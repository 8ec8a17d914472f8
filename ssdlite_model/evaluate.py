"""Detection metrics: Pascal VOC AP@0.5 (11-point and all-point) and COCO mAP@[.5:.95] (our own, and pycocotools).

Inputs everywhere: per image ``detections[i] = {"boxes" (D, 4) xyxy pixels, "scores" (D,), "labels" (D,)}`` and
``targets[i] = {"boxes" (G, 4) xyxy pixels, "labels" (G,)}``, labels in 1..K (0 is background), with optional
(G,) bool flags: "difficult" (VOC: not counted as ground truth, and a detection matched to one is neither a true nor
a false positive, as the VOC devkit scores them; for COCO AP they are ignore regions) and "iscrowd" (COCO crowd
regions, ignored the way COCOeval ignores them).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

from typing import Any, Callable

import numpy as np
import torch
from torchvision.ops import box_iou

COCO_IOUS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2))

Detections = dict[str, torch.Tensor]  # {"boxes" (D, 4) xyxy pixels, "scores" (D,), "labels" (D,)}


@dataclass
class DetectionMetrics:
    map50: float  # VOC all-point AP@0.5, mean over classes with ground truth
    map50_11pt: float  # VOC07 11-point AP@0.5
    coco_map: float  # AP@[.5:.95], 101-point, COCO matching
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> {"ap50", "ap50_11pt", "ap", "gt"}

    def to_dict(self) -> dict[str, Any]:
        return {"map50": self.map50, "map50_11pt": self.map50_11pt, "coco_map": self.coco_map, "per_class": self.per_class}


def _ap_all_points(recall: np.ndarray, precision: np.ndarray) -> float:
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # the precision envelope
    i = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[i + 1] - r[i]) * p[i + 1]))


def _ap_11_points(recall: np.ndarray, precision: np.ndarray) -> float:
    return float(np.mean([precision[recall >= t].max() if np.any(recall >= t) else 0.0 for t in np.arange(0, 1.1, 0.1)]))


def _ap_101_points(recall: np.ndarray, precision: np.ndarray) -> float:
    """COCO's interpolation: the envelope sampled at recall 0, 0.01, ..., 1 (searchsorted, side='left')."""
    p = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(np.mean([p[i] if i < len(p) else 0.0 for i in idx]))


def _class_matches(detections: list[Detections], targets: list[Detections], cls: int, iou: float, coco: bool,
                   max_dets: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, is_true_positive, number of ground-truth boxes) for one class at one IoU threshold."""
    scores_all, tps_all, n_gt = [], [], 0
    for det, tgt in zip(detections, targets):
        of_class = tgt["labels"] == cls
        gt = tgt["boxes"][of_class].float()
        hard = _flag(tgt, "difficult")[of_class].numpy() if not coco else np.zeros(len(gt), dtype=bool)
        n_gt += int((~hard).sum())
        mask = det["labels"] == cls
        boxes, scores = det["boxes"][mask].float(), det["scores"][mask].float()
        order = torch.argsort(-scores, stable=True)
        if coco:  # COCOeval keeps each (image, class)'s best max_dets detections
            order = order[:max_dets]
        boxes, scores = boxes[order], scores[order]
        tp = np.zeros(len(boxes), dtype=bool)
        counted = np.ones(len(boxes), dtype=bool)  # False: matched to a difficult object, left out of the curve
        if len(gt) and len(boxes):
            ious = box_iou(boxes, gt).numpy()
            taken = np.zeros(len(gt), dtype=bool)
            for k in range(len(boxes)):
                if coco:  # the best still-unmatched ground truth at or above the threshold
                    best, m = min(iou, 1 - 1e-10), -1
                    for g in range(len(gt)):
                        if not taken[g] and ious[k, g] >= best:
                            best, m = ious[k, g], g
                    if m >= 0:
                        taken[m], tp[k] = True, True
                else:  # VOC: the best ground truth overall; a second hit on it is a false positive
                    g = int(ious[k].argmax())
                    if ious[k, g] >= iou and hard[g]:
                        counted[k] = False
                    elif ious[k, g] >= iou and not taken[g]:
                        taken[g], tp[k] = True, True
        scores_all.append(scores.numpy()[counted])
        tps_all.append(tp[counted])
    return np.concatenate(scores_all) if scores_all else np.zeros(0), np.concatenate(tps_all) if tps_all else np.zeros(0, bool), n_gt


def _flag(target: Detections, key: str) -> torch.Tensor:
    """A target's (G,) bool flag ("difficult", "iscrowd"); all False when the target has none."""
    value = target.get(key)
    return value.bool().reshape(-1) if value is not None else torch.zeros(len(target["labels"]), dtype=torch.bool)


def _pr(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="mergesort")
    tp = tp[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(~tp)
    recall = ctp / max(n_gt, 1)
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    return recall, precision


def evaluate_detections(detections: list[Detections], targets: list[Detections], class_names: tuple[str, ...],
                        max_dets: int = 100, coco_backend: str = "auto") -> DetectionMetrics:
    """VOC AP@0.5 (all-point and 11-point, our own) and COCO AP@[.5:.95] per class; means over classes with ground
    truth. COCO AP comes from a maintained evaluator (``coco_backend``: "faster" = faster-coco-eval, "pycocotools",
    "auto" = the first installed, "own" = this module's Python loop, the fallback; all give the same numbers)."""
    backend = _coco_backend(coco_backend)
    coco_per_class = (_coco_per_class(detections, targets, len(class_names) + 1, max_dets, backend)
                      if backend != "own" else {})
    per_class: dict[str, dict[str, float]] = {}
    for cls, name in enumerate(class_names, start=1):
        scores, tp, n_gt = _class_matches(detections, targets, cls, 0.5, False, max_dets)
        if n_gt == 0:
            continue
        recall, precision = _pr(scores, tp, n_gt)
        if backend == "own":
            ap_coco = []
            for t in COCO_IOUS:
                s, tpc, _ = _class_matches(detections, targets, cls, float(t), True, max_dets)
                ap_coco.append(_ap_101_points(*_pr(s, tpc, n_gt)))
            ap = float(np.mean(ap_coco))
        else:
            ap = coco_per_class.get(cls, 0.0)
        per_class[name] = {
            "ap50": _ap_all_points(recall, precision),
            "ap50_11pt": _ap_11_points(recall, precision),
            "ap": ap,
            "gt": n_gt,
        }

    def mean(key: str) -> float:
        return float(np.mean([v[key] for v in per_class.values()])) if per_class else 0.0

    return DetectionMetrics(mean("ap50"), mean("ap50_11pt"), mean("ap"), per_class)


def _coco_backend(name: str) -> str:
    """The evaluator to use: "faster" (faster-coco-eval), "pycocotools", or "own" when neither is installed."""
    import importlib.util

    if name not in ("auto", "faster", "pycocotools", "own"):
        raise ValueError(f"unknown COCO evaluator {name!r}: use auto, faster, pycocotools or own")
    if name != "auto":
        return name
    for backend, module in (("faster", "faster_coco_eval"), ("pycocotools", "pycocotools")):
        if importlib.util.find_spec(module) is not None:
            return backend
    return "own"


def _run_cocoeval(detections: list[Detections], targets: list[Detections], num_classes: int, max_dets: int,
                  backend: str) -> Any:
    """An evaluated and accumulated COCOeval (either implementation) on the detections, boxes in pixels.
    A target's optional "iscrowd" (N,) marks crowd boxes: matched detections on them are ignored, as COCO does."""
    if backend == "faster":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for i, (det, tgt) in enumerate(zip(detections, targets), start=1):
        images.append({"id": i, "width": 10_000, "height": 10_000})
        crowd = (_flag(tgt, "iscrowd") | _flag(tgt, "difficult")).tolist()  # both are regions COCOeval ignores
        for box, label, is_crowd in zip(tgt["boxes"].tolist(), tgt["labels"].tolist(), crowd):
            x0, y0, x1, y1 = box
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label),
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": int(is_crowd)})
        for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
            x0, y0, x1, y1 = box
            results.append({"image_id": i, "category_id": int(label), "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": k} for k in range(1, num_classes)]}
        gt.createIndex()
        dt = gt.loadRes(results) if results else COCO()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
    return ev


def _coco_per_class(detections: list[Detections], targets: list[Detections], num_classes: int, max_dets: int,
                    backend: str) -> dict[int, float]:
    """COCO AP@[.5:.95] per class id (classes with ground truth only)."""
    if not any(len(t["labels"]) for t in targets):
        return {}
    ev = _run_cocoeval(detections, targets, num_classes, max_dets, backend)
    m = list(ev.params.maxDets).index(max_dets)  # evaluate() sorts maxDets
    precision = np.asarray(ev.eval["precision"])[:, :, :, 0, m]  # (iou, recall, class) at area "all"
    out = {}
    for k, cls in enumerate(ev.params.catIds):
        p = precision[:, :, k]
        if (p > -1).any():
            out[int(cls)] = float(p[p > -1].mean())
    return out


def coco_eval(detections: list[Detections], targets: list[Detections], num_classes: int, max_dets: int = 100,
              backend: str = "pycocotools") -> list[float]:
    """COCOeval's 12 summary numbers (stats[0] is AP@[.5:.95] at ``max_dets`` detections per image) from
    pycocotools (the reference) or faster-coco-eval."""
    ev = _run_cocoeval(detections, targets, num_classes, max_dets, _coco_backend(backend))
    with contextlib.redirect_stdout(io.StringIO()):
        ev.summarize()
    stats = [float(x) for x in ev.stats]
    if max_dets != 100:  # summarize() reads AP@[.5:.95] at maxDets=100 only (-1 otherwise): take it at max_dets
        m = list(ev.params.maxDets).index(max_dets)
        precision = np.asarray(ev.eval["precision"])[:, :, :, 0, m]
        valid = precision[precision > -1]
        stats[0] = float(valid.mean()) if valid.size else -1.0
    return stats


@torch.no_grad()
def predict(model: Any, dataset: Any, batch_size: int = 16, progress: Callable[[int], None] | None = None,
            device: str | torch.device = "cpu") -> tuple[list[Detections], list[Detections]]:
    """Run ``model.detect`` over a dataset of (image, target) -> (detections, targets) on the CPU."""
    from .data.shapes import collate_detection

    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_detection)
    detections, targets = [], []
    try:
        for images, tgts in loader:
            dets = model.detect(images.to(device))
            detections += [{k: v.cpu() for k, v in d.items()} for d in dets]
            targets += tgts
            if progress:
                progress(len(targets))
    finally:
        model.train(was_training)
    return detections, targets


def evaluate_model(model: Any, dataset: Any, batch_size: int = 16, progress: Callable[[int], None] | None = None,
                   device: str | torch.device = "cpu") -> DetectionMetrics:
    detections, targets = predict(model, dataset, batch_size, progress, device)
    names = tuple(getattr(dataset, "class_names", ())) or tuple(f"class{k}" for k in range(1, model.config.num_classes))
    return evaluate_detections(detections, targets, names[: model.config.num_classes - 1])
