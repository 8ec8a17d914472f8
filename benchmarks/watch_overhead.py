"""Training-step overhead of the training doctor: ``watch(every=1)`` and ``watch(every=10)`` against no watch.

Goal (issue 24): at most 3% per step with every=1, at most 1% with every=10, on the CPU SSDLite step
(``--ssdlite``); by default a small CNN (fast, and a harder case: hooks weigh more in a short step). The three
variants alternate in blocks of steps, so that machine noise hits them alike; medians are compared.
Run: python benchmarks/watch_overhead.py [--quick] [--ssdlite] [--blocks N] [--block-steps K]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ssdaudit.training.doctor import watch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import record, set_quick  # noqa: E402


def small_cnn(batch: int) -> tuple[nn.Module, Callable[[int], float]]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Dropout(0.1), nn.Linear(64, 10))
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(_i: int) -> float:
        start = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        return time.perf_counter() - start

    step.opt = opt  # type: ignore[attr-defined]
    return model, step


def ssdlite(batch: int) -> tuple[nn.Module, Callable[[int], float]]:
    from ssdaudit.registration.ssdlite_adapter import ssdlite_probe
    from ssdlite_model import build_ssdlite, ssds_voc

    torch.manual_seed(0)
    model = build_ssdlite(ssds_voc())
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    make_batch, compute_loss = ssdlite_probe(model, batch)
    batches = [make_batch(i) for i in range(4)]

    def step(i: int) -> float:
        images, targets = batches[i % len(batches)]
        start = time.perf_counter()
        loss = compute_loss(model(images), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    step.opt = opt  # type: ignore[attr-defined]
    return model, step


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few blocks only (a smoke run; noisy)")
    parser.add_argument("--ssdlite", action="store_true", help="the CPU SSDLite step (ssds-voc 300 px, batch 8)")
    parser.add_argument("--blocks", type=int, default=12, help="rounds of the three variants (after one warm-up round)")
    parser.add_argument("--block-steps", type=int, default=5, help="steps per variant per round")
    args = parser.parse_args()
    if args.quick:
        set_quick()
        args.blocks, args.block_steps = 3, 3
    model, step = ssdlite(8) if args.ssdlite else small_cnn(64)
    opt = step.opt  # type: ignore[attr-defined]
    variants = {"no watch": None, "watch(every=1)": 1, "watch(every=10)": 10}
    times: dict[str, list[float]] = {name: [] for name in variants}
    # one watch per variant, attached for its blocks only: the first backward's one-time discovery (graph walk,
    # attribute walk) is paid in the warm-up round, as in a real run where it happens once
    watches = {name: watch(model, opt, every=every) for name, every in variants.items() if every is not None}
    i = 0
    for b in range(1 + args.blocks):
        for name in variants:
            w = watches[name].attach() if name in watches else None
            ts = []
            for _ in range(args.block_steps):
                ts.append(step(i))
                i += 1
            if w is not None:
                w.detach()
            if b > 0:  # the first round warms up (and pays each watch's one-time graph walk)
                times[name].extend(ts)
    base = statistics.median(times["no watch"])
    what = "SSDLite ssds-voc 300 px, batch 8" if args.ssdlite else "small CNN 32 px, batch 64"
    print(f"{what}, CPU threads {torch.get_num_threads()}, {len(times['no watch'])} steps per variant (medians)\n")
    print(f"{'variant':18} {'s/step':>8} {'ratio':>7}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:18} {med:8.4f} {med / base:7.3f}")
    for name, goal in (("watch(every=1)", 1.03), ("watch(every=10)", 1.01)):
        ratio = statistics.median(times[name]) / base
        record(f"watch: {name} step time, {what}", f"{statistics.median(times[name]) * 1e3:.1f} ms",
               f"no watch {base * 1e3:.1f} ms", ratio, f"<= {goal:.2f}x", ratio <= goal)


if __name__ == "__main__":
    main()
