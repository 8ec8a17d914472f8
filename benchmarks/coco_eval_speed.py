"""COCO mAP on 5,000 synthetic images: the former Python loop (re-matching per IoU threshold) against
faster-coco-eval (what `ssdlite eval` and training use now) and pycocotools (the reference), on the same
detections, in one run. faster-coco-eval must equal pycocotools; the old loop's gap is printed (it matched on the
small test case but not exactly here, one more reason to leave the job to a maintained evaluator).

Run: python benchmarks/coco_eval_speed.py [--images 5000] [--quick]   (--quick: 60 images, a smoke run)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import record, set_quick  # noqa: E402

from ssdlite_model.evaluate import coco_eval, evaluate_detections  # noqa: E402

CLASSES = ("circle", "square", "triangle")


def synthetic(n: int, seed: int = 0) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """Per image 1-6 ground-truth boxes; detections = noisy copies with scores, some wrong labels, some spurious."""
    g = torch.Generator().manual_seed(seed)
    dets, tgts = [], []
    for _ in range(n):
        k = int(torch.randint(1, 7, (1,), generator=g))
        xy = torch.rand(k, 2, generator=g) * 250
        gt = torch.cat([xy, xy + 10 + torch.rand(k, 2, generator=g) * 40], 1)
        labels = torch.randint(1, len(CLASSES) + 1, (k,), generator=g)
        noisy = gt + torch.randn(k, 4, generator=g) * 4
        extra = torch.rand(3, 2, generator=g) * 250
        spurious = torch.cat([extra, extra + 20], 1)
        dets.append({"boxes": torch.cat([noisy, spurious]), "scores": torch.rand(k + 3, generator=g),
                     "labels": torch.cat([labels, torch.randint(1, len(CLASSES) + 1, (3,), generator=g)])})
        tgts.append({"boxes": gt, "labels": labels})
    return dets, tgts


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="synthetic images (default 5000; 60 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a few images: a smoke run of the same code")
    args = parser.parse_args()
    set_quick(args.quick)
    args.images = args.images or (60 if args.quick else 5000)
    dets, tgts = synthetic(args.images)
    own, t_own = timed(lambda: evaluate_detections(dets, tgts, CLASSES, coco_backend="own").coco_map)
    fast, t_fast = timed(lambda: evaluate_detections(dets, tgts, CLASSES, coco_backend="faster").coco_map)
    ref, t_ref = timed(lambda: coco_eval(dets, tgts, num_classes=len(CLASSES) + 1)[0])
    print(f"{args.images:,} images, {sum(len(t['labels']) for t in tgts):,} boxes, {sum(len(d['labels']) for d in dets):,} detections")
    print(f"{'evaluator':<36} {'seconds':>8} {'COCO mAP':>10}")
    print(f"{'own Python loop (before)':<36} {t_own:8.2f} {own:10.6f}")
    print(f"{'faster-coco-eval (now)':<36} {t_fast:8.2f} {fast:10.6f}")
    print(f"{'pycocotools (reference)':<36} {t_ref:8.2f} {ref:10.6f}")
    equal = abs(fast - ref) < 1e-9
    print(f"speed-up {t_own / t_fast:.1f}x over the loop, {t_ref / t_fast:.1f}x over pycocotools; "
          f"faster-coco-eval equals pycocotools: {equal}; the old loop was off by {own - ref:+.2e}")
    record(f"ssdlite: COCO mAP, {args.images:,} images", f"{t_fast:.2f} s (faster-coco-eval)",
           f"own loop {t_own:.1f} s (off by {own - ref:+.1e}), pycocotools {t_ref:.1f} s", t_own / t_fast,
           "faster, equal to pycocotools", equal and t_fast < t_own)


if __name__ == "__main__":
    main()
