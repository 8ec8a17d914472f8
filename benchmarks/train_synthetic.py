"""From-scratch training on the synthetic shapes dataset under a fixed time budget, with and without the seed's bug.

Prints the mAP@0.5 reached by the fixed model, by the buggy one (backbone in a plain list) and by the buggy one
after its checkpoint is reloaded into a fresh instance (its backbone comes back random). Goal (issue: trainer):
the fixed model reaches at least 0.6; the buggy one clearly less; its reload near zero.
Run: python benchmarks/train_synthetic.py [--minutes 10]   (about 2 x minutes + evaluation)
     python benchmarks/train_synthetic.py --quick   (the demo's --quick recipe: tiny model and data, one epoch each)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from seed_story import QUICK_RECIPE, RECIPE, train_variant  # noqa: E402

import buggy_plain_list  # noqa: E402
from ssdlite_model.detector import SSDLite  # noqa: E402


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import record, set_quick  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=None,
                        help="training budget per model, minutes of wall-clock (data loading included); 10, or 0.5 with --quick")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true",
                        help="seed_story's QUICK_RECIPE (tiny models and data, one epoch): a smoke run of the same code")
    args = parser.parse_args()
    set_quick(args.quick)
    args.minutes = args.minutes or (0.5 if args.quick else 10.0)
    recipe = QUICK_RECIPE if args.quick else RECIPE
    rows = []
    with tempfile.TemporaryDirectory(prefix="train_synthetic_") as tmp:
        for name, factory in (("fixed (nn.ModuleList)", SSDLite), ("buggy (plain list)", buggy_plain_list.PlainListSSDLite)):
            r = train_variant(name.split()[0], factory, Path(tmp), args.minutes, recipe, gradflow=False)
            last = r["records"][-1]
            rows.append((name, last["epoch"], last["step"], last["loss"], r["trained_map"], r["reloaded_map"],
                         last["images_per_s"]))
    settings = ", ".join(f"{k}={v}" for k, v in recipe.items())
    print(f"budget {args.minutes} min of wall-clock training per model (data loading included), CPU threads {torch.get_num_threads()}; {settings}\n")
    print(f"{'model':24} {'epochs':>6} {'steps':>6} {'loss':>7} {'mAP@0.5':>8} {'after reload':>13} {'img/s':>6}")
    for name, epochs, steps, loss, m, reloaded, ips in rows:
        print(f"{name:24} {epochs:6d} {steps:6d} {loss:7.3f} {m:8.3f} {reloaded:13.3f} {ips:6.1f}")
    fixed, buggy = rows[0], rows[1]
    print(f"\ngoal: fixed mAP@0.5 >= 0.6: {'met' if fixed[4] >= 0.6 else 'MISSED'} ({fixed[4]:.3f}); "
          f"buggy {buggy[4]:.3f} ({buggy[4] / max(fixed[4], 1e-9):.2f}x of fixed); buggy after reload {buggy[5]:.3f}")
    record("ssdlite: mAP@0.5 after the training budget", f"{fixed[4]:.3f}", f"buggy {buggy[4]:.3f}, reloaded {buggy[5]:.3f}",
           None, ">= 0.6", fixed[4] >= 0.6)
    if args.json:
        args.json.write_text(json.dumps({"minutes": args.minutes, "recipe": recipe, "rows": [
            dict(zip(("model", "epochs", "steps", "loss", "map50", "map50_reloaded", "images_per_s"), r)) for r in rows]}, indent=2))


if __name__ == "__main__":
    main()
