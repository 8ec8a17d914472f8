"""Host syncs per training step made by the training doctor's own code: ``.item()``, ``.tolist()``, ``.cpu()``,
``.numpy()``, ``bool()``/``float()``/``int()`` of a tensor, counted when the calling frame is in ``ssdaudit``.

Goal (issue 31): at most 1 per step with ``watch(every=1)`` and 0 on the steps between checks with ``every=10``
(a sync stalls a GPU's queue: on a CPU it costs little, so it is counted, not timed). The step is a torchvision
model's (resnet18, 64 px, batch 8, SGD with momentum, cross-entropy) with the real data of a classifier: shuffled
batches of 10 classes. The first step (the monitor's one-time discovery) is counted apart; ``findings()`` at the end
is not a step and is not counted.
Run: python benchmarks/watch_syncs.py [--quick] [--steps N]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision

from ssdaudit.training.doctor import watch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import record, set_quick  # noqa: E402

OURS = str(Path(__file__).resolve().parents[1] / "ssdaudit")
METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


class SyncCounter:
    """Wraps the syncing ``torch.Tensor`` methods while active; counts the calls whose caller is ssdaudit's code,
    per (file:line, method)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> "SyncCounter":
        for name in METHODS:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original
            setattr(torch.Tensor, name, self._wrap(name, original))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)

    def _wrap(self, name: str, original: Any) -> Any:
        counter = self

        def wrapper(t: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            frame = sys._getframe(1)
            if frame.f_code.co_filename.startswith(OURS):
                counter.calls[f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {name}"] += 1
            return original(t, *args, **kwargs)

        return wrapper

    def take(self) -> Counter[str]:
        out, self.calls = self.calls, Counter()
        return out


def run(every: int, steps: int, batch: int, size: int) -> tuple[int, list[int], Counter[str]]:
    """(syncs at the first step, syncs per later step, where they came from)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(steps * batch, 3, size, size, generator=g)
    y = torch.randint(0, 10, (steps * batch,), generator=g)
    per_step: list[int] = []
    where: Counter[str] = Counter()
    first = 0
    with SyncCounter() as counter, watch(model, opt, every=every) as w:
        for i in range(steps):
            xb, yb = x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            calls = counter.take()
            if i == 0:
                first = sum(calls.values())
            else:
                per_step.append(sum(calls.values()))
                where.update(calls)
        counter.take()
        w.findings()
    return first, per_step, where


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="11 steps of 32 px images, batch 4: a smoke run")
    parser.add_argument("--steps", type=int, default=41, help="steps per variant (the first counted apart)")
    args = parser.parse_args()
    batch, size = 8, 64
    if args.quick:
        set_quick()
        args.steps, batch, size = 11, 4, 32
    print(f"resnet18 {size} px, batch {batch}, {args.steps} steps per variant; syncs made by ssdaudit's code\n")
    print(f"{'variant':16} {'first step':>10} {'per step':>9} {'max':>4} {'between checks':>15}")
    for every, goal in ((1, 1.0), (10, 0.0)):
        first, per_step, where = run(every, args.steps, batch, size)
        mean = sum(per_step) / len(per_step)
        # steps 2.. (index k is step k + 2); a check runs on steps 1, 1 + every, ...
        between = [n for k, n in enumerate(per_step) if (k + 1) % every != 0]
        between_mean = sum(between) / len(between) if between else 0.0
        print(f"watch(every={every:<2})   {first:10d} {mean:9.2f} {max(per_step):4d} {between_mean:15.2f}")
        for site, n in where.most_common(6):
            print(f"    {n / len(per_step):6.2f}/step  {site}")
        if every == 1:
            record(f"watch: host syncs per step, watch(every=1), resnet18 {size} px", f"{mean:.2f} per step",
                   f"max {max(per_step)}; first step {first}", mean, "<= 1", mean <= goal and max(per_step) <= 1)
        else:
            record(f"watch: host syncs on steps between checks, watch(every=10), resnet18 {size} px",
                   f"{between_mean:.2f} per step", f"{mean:.2f} per step overall; first step {first}", between_mean,
                   "0", between_mean == 0)


if __name__ == "__main__":
    main()
