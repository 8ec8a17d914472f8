"""Inference speed of this project's SSDLite (ssds-voc, 300 px) against torchvision's ssdlite320_mobilenet_v3_large.

Images/s in eval mode at batch 1 and 8, network only and with post-processing (decode + NMS), plus multiply-adds
per image (torch.utils.flop_counter) and per second, all measured in one run. Goal (issue: trainer): ssds_voc at
40 images/s or more at batch 8, network only, i.e. torchvision's efficiency per multiply-add or better, same outputs.
Optimisations of the "optimised" rows: BatchNorm folded into the convolutions, channels_last, torch.inference_mode
(and torch.compile with --compile).
Run: python benchmarks/inference_speed.py [--seconds 4] [--compile]
     python benchmarks/inference_speed.py --quick   (batches 1 and 2, a moment per row: a smoke run of the same code)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ssdlite_model import build_ssdlite, ssds_voc
from ssdlite_model.optimize import fold_batchnorm


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import record, set_quick  # noqa: E402


def images_per_second(fn, batch: torch.Tensor, seconds: float) -> float:
    with torch.inference_mode():
        fn(batch)  # warm-up (and compile)
        fn(batch)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn(batch)
            n += batch.shape[0]
        return n / (time.perf_counter() - start)


def macs(fn, x: torch.Tensor) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(x)
    return counter.get_total_flops() / 2 / x.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None, help="measuring time per row (4; --quick 0.05)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile the optimised network")
    parser.add_argument("--quick", action="store_true", help="batches 1 and 2, a moment per row: a smoke run of the same code")
    args = parser.parse_args()
    set_quick(args.quick)
    args.seconds = args.seconds or (0.05 if args.quick else 4.0)
    big = 2 if args.quick else 8  # the batch of the goal's row
    torch.manual_seed(0)
    ours = build_ssdlite(ssds_voc()).eval()
    folded = fold_batchnorm(ours).to(memory_format=torch.channels_last)
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()

    def tv_network(x):
        feats = tv.backbone((x - 0.5) / 0.5)  # torchvision's transform normalises to [-1, 1] for this model
        return tv.head(list(feats.values()))

    x300 = {b: torch.rand(b, 3, 300, 300) for b in (1, big)}
    x320 = {b: torch.rand(b, 3, 320, 320) for b in (1, big)}
    with torch.inference_mode():
        ref, opt = ours(x300[big]), folded(x300[big].contiguous(memory_format=torch.channels_last))
    same = max(float((a - b).abs().max()) for a, b in zip(ref, opt))
    fast = folded
    if args.compile:
        fast = torch.compile(folded)
    cl = torch.channels_last
    rows = []
    for batch in (1, big):
        rows += [
            ("ours ssds-voc, plain eval", batch, "network", images_per_second(ours, x300[batch], args.seconds), macs(ours, x300[batch])),
            ("ours ssds-voc, optimised", batch, "network",
             images_per_second(lambda x: fast(x.contiguous(memory_format=cl)), x300[batch], args.seconds), macs(ours, x300[batch])),
            ("ours ssds-voc, optimised", batch, "+ post-processing",
             images_per_second(lambda x: _detect(fast, ours, x), x300[batch], args.seconds), macs(ours, x300[batch])),
            ("torchvision ssdlite320 mnv3", batch, "network", images_per_second(tv_network, x320[batch], args.seconds), macs(tv_network, x320[batch])),
            ("torchvision ssdlite320 mnv3", batch, "+ post-processing",
             images_per_second(lambda x: tv(list(x)), x320[batch], args.seconds), macs(tv_network, x320[batch])),
        ]
    print(f"CPU threads {torch.get_num_threads()}; optimised = BN folded + channels_last + inference_mode"
          f"{' + torch.compile' if args.compile else ''}; max |diff| optimised vs plain outputs: {same:.1e}\n")
    print(f"{'model':30} {'batch':>5} {'what':>18} {'images/s':>9} {'GMACs/img':>10} {'GMAC/s':>7}")
    for name, batch, what, ips, m in rows:
        print(f"{name:30} {batch:5d} {what:>18} {ips:9.1f} {m / 1e9:10.3f} {ips * m / 1e9:7.1f}")
    get = {(r[0], r[1], r[2]): r for r in rows}
    o = get[("ours ssds-voc, optimised", big, "network")]
    t = get[("torchvision ssdlite320 mnv3", big, "network")]
    print(f"\nbatch {big}, network only: ours {o[3]:.1f} images/s vs torchvision {t[3]:.1f}: ratio {o[3] / t[3]:.2f}")
    eff = (o[3] * o[4]) / (t[3] * t[4])
    print(f"multiply-adds per second, ours / torchvision: {eff:.2f}")
    print(f"goal >= 40 images/s: {'met' if o[3] >= 40 else 'MISSED'} ({o[3]:.1f}); "
          f"torchvision's efficiency per MAC or better: {'met' if eff >= 1 else 'MISSED'}")
    record(f"ssdlite: inference, batch {big}, network only", f"{o[3]:.1f} img/s", f"torchvision ssdlite320 {t[3]:.1f} img/s",
           o[3] / t[3], ">= 40 img/s", o[3] >= 40)
    record("ssdlite: multiply-adds per second", f"{o[3] * o[4] / 1e9:.1f} GMAC/s", f"torchvision {t[3] * t[4] / 1e9:.1f} GMAC/s",
           eff, ">= 1x", eff >= 1)


def _detect(network, model, x):
    from ssdlite_model.postprocess import postprocess_detections

    loc, conf = network(x.contiguous(memory_format=torch.channels_last))
    h, w = x.shape[-2:]
    c = model.config
    return postprocess_detections(loc, conf, model.priors, [(h, w)] * x.shape[0], model.box_coder,
                                  c.score_threshold, c.nms_threshold, c.max_detections)


if __name__ == "__main__":
    main()
