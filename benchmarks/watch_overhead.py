"""Training-step overhead of the training doctor: ``watch(every=1)`` and ``watch(every=10)`` against no watch.

Goal (issue 24): at most 3% per step with every=1, at most 1% with every=10, on the CPU SSDLite step (ssds-voc,
300 px, batch 8, SGD with momentum, MultiBox loss: the step of gradflow_overhead.py, ``_steps.ssdlite_step``).
``--cnn``: a small CNN instead (a harder case: hooks weigh more in a short step). The three variants alternate in
blocks of steps, so that machine noise hits them alike, each round in another order (every variant takes every place
in a round equally often); medians are compared. The time spent inside the doctor's
hooks is measured too (``timed_hooks``), a figure that noise from other jobs does not blur.
``--guard``: the non-finite guard (F001-F006, issue 33) instead: watch(every=1) with and without its check, and, as
an anchor, the same step under ``torch.autograd.set_detect_anomaly(True)`` without a watch; the guard's own time
inside its hooks is measured too.
Run: python benchmarks/watch_overhead.py [--quick] [--cnn] [--guard] [--blocks N] [--block-steps K]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssdaudit.training.doctor import watch
from ssdaudit.training.doctor.checks import all_checks
from ssdaudit.training.doctor.checks.nonfinite import FirstNonFinite
from ssdaudit.training.doctor.watch import Watch
from ssdlite_model import ssds_voc, tiny

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _steps import LAST_CPU, ssdlite_step, time_methods, timed  # noqa: E402
from _summary import record, set_quick  # noqa: E402


def small_cnn(batch: int) -> tuple[nn.Module, torch.optim.Optimizer, Callable[[int], float]]:
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

    return model, opt, step


def rotated(names: list[str], by: int) -> list[str]:
    """The variants in round ``by``'s order: each round starts one later, so that every variant takes every place in
    a round equally often (the third block of a round ran about 2% slower than the first here, whatever ran in it)."""
    k = by % len(names)
    return names[k:] + names[:k]


def timed_hooks(w: Watch, seconds: list[float]) -> None:
    """Add the wall time spent inside ``w``'s hooks (its own and its GradFlowMonitor's) to ``seconds[0]``: a measure
    of the doctor's own cost that the step-to-step noise of a shared machine does not blur (the loss/dropout/clip
    taps, a few calls per step, are left out)."""
    time_methods(w, ("_on_step_pre", "_on_step_post", "_backward_end"), seconds)
    make_hook = w._grad_hook
    setattr(w, "_grad_hook", lambda p: timed(make_hook(p), seconds))
    for name in ("_module_pre_hook", "_module_post_hook"):  # the global module hooks themselves (every call)
        make = getattr(w, name)
        setattr(w, name, lambda make=make: timed(make(), seconds))
    if w.monitor is not None:
        time_methods(w.monitor, ("_on_forward_pre", "_on_forward", "_after_backward", "_on_step_pre", "_on_step_post"),
                     seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the tiny SSDLite (96 px, batch 2), a few blocks: a smoke run")
    parser.add_argument("--cnn", action="store_true", help="a small CNN (32 px, batch 64) instead of the SSDLite step")
    parser.add_argument("--blocks", type=int, default=12, help="rounds of the three variants (after one warm-up round)")
    parser.add_argument("--block-steps", type=int, default=5, help="steps per variant per round")
    parser.add_argument("--guard", action="store_true", help="the non-finite guard's cost, and anomaly mode's")
    args = parser.parse_args()
    if args.quick:
        set_quick()
        args.blocks, args.block_steps = 2, 2
    if args.cnn:
        model, opt, step = small_cnn(64)
        what = "small CNN 32 px, batch 64"
    else:
        config = tiny() if args.quick else ssds_voc()
        batch = 2 if args.quick else 8
        model, opt, step = ssdlite_step(config, batch)
        what = f"SSDLite {'tiny' if args.quick else 'ssds-voc'} {config.image_size} px, batch {batch}"
    if args.guard:
        guard(model, opt, step, what, args)
        return
    variants = {"no watch": None, "watch(every=1)": 1, "watch(every=10)": 10}
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}  # the process's CPU time per step
    inside: dict[str, list[float]] = {name: [0.0] for name in variants}  # seconds inside the doctor's hooks
    # one watch per variant, attached for its blocks only: the first backward's one-time discovery (graph walk,
    # attribute walk) is paid in the warm-up round, as in a real run where it happens once
    watches = {name: watch(model, opt, every=every) for name, every in variants.items() if every is not None}
    for name, w in watches.items():
        timed_hooks(w, inside[name])
    i = 0
    for b in range(1 + args.blocks):
        for name in rotated(list(variants), b):
            w = watches[name].attach() if name in watches else None
            ts, cs = [], []
            for _ in range(args.block_steps):
                ts.append(step(i))
                cs.append(LAST_CPU[0])
                i += 1
            if w is not None:
                w.detach()
            if b > 0:  # the first round warms up (and pays each watch's one-time graph walk)
                times[name].extend(ts)
                cpu[name].extend(cs)
            else:
                inside[name][0] = 0.0
    base = statistics.median(times["no watch"])
    steps = len(times["no watch"])
    print(f"{what}, CPU threads {torch.get_num_threads()}, {steps} steps per variant (medians)\n")
    cpu_base = statistics.median(cpu["no watch"])
    print(f"{'variant':18} {'s/step':>8} {'ratio':>7} {'cpu ratio':>10} {'inside hooks':>13}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:18} {med:8.4f} {med / base:7.3f} {statistics.median(cpu[name]) / cpu_base:10.3f} "
              f"{100 * inside[name][0] / steps / base:12.2f}%")
    print("\nratio: median step time over no watch's, the variants alternating in blocks of "
          f"{args.block_steps} steps; cpu ratio: the same with the process's CPU time per step (less blurred by other "
          "jobs on a shared machine); inside hooks: the doctor's own time per step over no watch's median step")
    for name, goal in (("watch(every=1)", 1.03), ("watch(every=10)", 1.01)):
        ratio = statistics.median(times[name]) / base
        own = inside[name][0] / steps / base
        record(f"watch: {name} step time, {what}", f"{statistics.median(times[name]) * 1e3:.0f} ms ({ratio:.3f}x)",
               f"no watch {base * 1e3:.0f} ms; inside the hooks {100 * own:.1f}%", ratio, f"<= {goal:.2f}x",
               ratio <= goal)


def guard(model: nn.Module, opt: torch.optim.Optimizer, step: Callable[[int], float], what: str,
          args: argparse.Namespace) -> None:
    """watch(every=1) without the non-finite check, with it, and anomaly mode without a watch, alternating."""
    names = ("no watch", "watch, no F guard", "watch (F guard)", "anomaly mode")
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    own = [0.0]  # seconds inside the guard's own methods
    without = Watch(model, opt, checks=[c for c in all_checks() if not isinstance(c, FirstNonFinite)])
    with_guard = Watch(model, opt)
    check = next(c for c in with_guard.checks if isinstance(c, FirstNonFinite))
    time_methods(check, ("on_step_pre", "on_step_post", "on_module_pre", "on_loss_value"), own)
    watches = {"watch, no F guard": without, "watch (F guard)": with_guard}
    i = 0
    for b in range(1 + args.blocks):
        for name in rotated(list(names), b):
            w = watches[name].attach() if name in watches else None
            ts, cs = [], []
            with torch.autograd.set_detect_anomaly(name == "anomaly mode", check_nan=True):
                for _ in range(args.block_steps):
                    ts.append(step(i))
                    cs.append(LAST_CPU[0])
                    i += 1
            if w is not None:
                w.detach()
            if b > 0:
                times[name].extend(ts)
                cpu[name].extend(cs)
            elif name == "watch (F guard)":
                own[0] = 0.0
            print(f"round {b} {name}: {' '.join(f'{t:.3f}' for t in ts)}", file=sys.stderr, flush=True)
    base = statistics.median(times["no watch"])
    ref = statistics.median(times["watch, no F guard"])
    steps = len(times["no watch"])
    print(f"{what}, CPU threads {torch.get_num_threads()}, {steps} steps per variant (medians)\n")
    cpu_ref = statistics.median(cpu["watch, no F guard"])
    print(f"{'variant':20} {'s/step':>8} {'/no watch':>10} {'/watch w/o guard':>17} {'cpu /watch w/o guard':>21}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:20} {med:8.4f} {med / base:10.3f} {med / ref:17.3f} {statistics.median(cpu[name]) / cpu_ref:21.3f}")
    print(f"\nthe guard's own time inside its hooks: {1e3 * own[0] / steps:.2f} ms per step, "
          f"{100 * own[0] / steps / ref:.2f}% of the watched step")
    ratio = statistics.median(times["watch (F guard)"]) / ref
    record(f"watch: non-finite guard, {what}", f"{ratio:.3f}x watch without it",
           f"its hooks {100 * own[0] / steps / ref:.2f}% of the step; anomaly mode "
           f"{statistics.median(times['anomaly mode']) / base:.2f}x no watch", ratio, "<= 1.03x", ratio <= 1.03)


if __name__ == "__main__":
    main()
