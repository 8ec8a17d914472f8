"""Clean training raises nothing: train zoo models for a few steps under ``ssdaudit.watch`` and count the findings.

    python benchmarks/train_sweep.py                    # torchvision classification: every builder
    python benchmarks/train_sweep.py --zoo timm         # timm: the first model of every architecture module
    python benchmarks/train_sweep.py --zoo timm --sample 3 --max-params 30e6   # every 3rd model, up to 30M
    python benchmarks/train_sweep.py --quick            # two small models per zoo, fewer steps: a smoke run

Goal (issue 24): 0 findings at warning or error level. Every model is a correct model trained the ordinary way, so
any such finding is a false alarm. Each model is trained from random weights (nothing downloaded) for ``--steps``
optimizer steps in four runs: SGD (momentum) and AdamW, each in fp32 and under CPU autocast (bfloat16), with
``ssdaudit.watch(model, optimizer, every=1)`` attached (the T rules and GradFlowMonitor's G001-G006). Inputs are
tiny: batch 4, random normal images at 64x64, or at the model's default size when it does not accept 64x64 (then
the size is printed); random labels over 10 classes. A model whose train-mode output holds auxiliary logits
(GoogLeNet, Inception) is trained on all of them, as its recipe does. Models over ``--max-params`` are skipped
(named, with their size); a model that cannot be built or run here is listed with the error and not counted.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssdaudit import Severity
from ssdaudit.training.doctor import watch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import record, set_quick  # noqa: E402

QUICK = {"torchvision": ("squeezenet1_1", "mobilenet_v3_small"), "timm": ("resnet10t", "test_vit")}
CLASSES = 10
BATCH = 4
SMALL = 64
CONFIGS = (("SGD", False), ("SGD", True), ("AdamW", False), ("AdamW", True))  # (optimizer, autocast bf16)


@dataclass
class Row:
    name: str
    params: int = 0
    size: int = SMALL
    runs: int = 0
    flagged: list[str] = field(default_factory=list)  # "config RULE path: message" of warning/error findings
    skipped: str | None = None  # why the model was not trained (too large, cannot be built or run here)
    seconds: float = 0.0


def torchvision_models(only: tuple[str, ...] | None) -> Iterator[tuple[str, Callable[[], nn.Module], int]]:
    """(name, build, default input size) of every torchvision classification builder, or of ``only``."""
    import torchvision

    for name in only or sorted(torchvision.models.list_models(module=torchvision.models)):
        def build(name: str = name) -> nn.Module:
            return torchvision.models.get_model(name, weights=None, num_classes=CLASSES)

        yield name, build, 299 if "inception" in name else 224


def timm_models(only: tuple[str, ...] | None, limit: int | None) -> Iterator[tuple[str, Callable[[], nn.Module], int]]:
    """The first model of every timm architecture module, in timm's order (a deterministic sample), or ``only``."""
    import timm

    seen: set[str] = set()
    for name in only or timm.list_models():
        if limit is not None and len(seen) >= limit:
            return
        module = timm.models._registry.model_entrypoint(name).__module__
        if module in seen and not only:
            continue
        seen.add(module)
        cfg = timm.models.get_pretrained_cfg(name)
        size = int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224

        def build(name: str = name) -> nn.Module:
            return timm.create_model(name, pretrained=False, num_classes=CLASSES)

        yield name, build, size


def logits_of(out: Any) -> list[torch.Tensor]:
    """The (N, CLASSES) tensors in a model's output: the main logits, and auxiliary ones where a train-mode forward
    returns them (GoogLeNet, Inception, distilled ViTs)."""
    if isinstance(out, torch.Tensor):
        return [out] if out.dim() == 2 and out.shape[-1] == CLASSES else []
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out if o is not None for t in logits_of(o)]
    return []


def accepts(model: nn.Module, size: int) -> bool:
    """Whether a train-mode forward and backward run at ``size`` px (a copy of ``model``: its statistics stay)."""
    probe = copy.deepcopy(model).train()
    try:
        out = logits_of(probe(torch.randn(BATCH, 3, size, size)))
        if not out:
            return False
        sum(o.float().sum() for o in out).backward()  # type: ignore[union-attr]
        return True
    except Exception:
        return False


def train(model: nn.Module, optimizer: str, amp: bool, size: int, steps: int, seed: int) -> list[str]:
    """``steps`` training steps of ``model`` under ``watch(every=1)``; its warning/error findings as strings."""
    gen = torch.Generator().manual_seed(seed)
    model.train()
    opt: torch.optim.Optimizer
    if optimizer == "SGD":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with watch(model, opt, every=1) as doctor:
        for _ in range(steps):
            x = torch.randn(BATCH, 3, size, size, generator=gen)
            y = torch.randint(0, CLASSES, (BATCH,), generator=gen)
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                outs = logits_of(model(x))
                loss = sum(F.cross_entropy(o.float(), y) for o in outs)
            loss.backward()  # type: ignore[union-attr]
            opt.step()
    return [f"{f.rule} {f.path}: {f.message[:200]}" for f in doctor.findings()
            if f.severity in (Severity.ERROR, Severity.WARNING)]


def sweep(zoo: str, only: tuple[str, ...] | None, steps: int, max_params: float, limit: int | None,
          sizes: tuple[int, ...] = (SMALL,), sample: int = 1) -> list[Row]:
    source = torchvision_models(only) if zoo == "torchvision" else timm_models(only, limit)
    rows = []
    for k, (name, build, default_size) in enumerate(source):
        if limit is not None and k >= limit:
            break
        if k % sample:
            continue
        row = Row(name)
        start = time.perf_counter()
        try:
            torch.manual_seed(k)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = build()
        except Exception as exc:
            row.skipped = f"cannot be built: {type(exc).__name__}: {str(exc)[:80]}"
            rows.append(row)
            continue
        row.params = sum(p.numel() for p in model.parameters())
        if row.params > max_params:
            row.skipped = f"{row.params / 1e6:.0f}M parameters > --max-params {max_params / 1e6:.0f}M"
            rows.append(row)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits = [s for s in (*sizes, default_size) if accepts(model, s)]
        if not fits:
            row.skipped = f"a train-mode forward fails at {sizes[0]} and {default_size} px"
            rows.append(row)
            continue
        row.size = fits[0]
        for c, (optimizer, amp) in enumerate(CONFIGS):
            config = f"{optimizer}{' bf16' if amp else ''}"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    found = train(copy.deepcopy(model), optimizer, amp, row.size, steps, seed=c)
            except Exception as exc:  # an op without a bfloat16 CPU kernel, say: not a finding of ours
                row.flagged.append(f"{config}: could not train: {type(exc).__name__}: {str(exc)[:100]}")
                continue
            row.runs += 1
            row.flagged += [f"{config} {line}" for line in found]
        row.seconds = time.perf_counter() - start
        rows.append(row)
        print(f"{name}: {row.runs} runs at {row.size} px, {len(row.flagged)} flagged, {row.seconds:.1f} s", flush=True)
        for line in row.flagged:
            print(f"  {name}: {line}", flush=True)
        del model
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--zoo", choices=("torchvision", "timm", "both"), default="both")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per run (5; --quick 3)")
    parser.add_argument("--max-params", type=float, default=100e6, help="skip larger models (100e6)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N models of each zoo")
    parser.add_argument("--sample", type=int, default=1, help="every Nth model of each zoo's list (a deterministic sample)")
    parser.add_argument("--only", nargs="*", default=None, help="these models only (with one --zoo)")
    parser.add_argument("--quick", action="store_true", help="two small models per zoo, 3 steps at 32 px: a smoke run")
    args = parser.parse_args()
    set_quick(args.quick)
    zoos = ["torchvision", "timm"] if args.zoo == "both" else [args.zoo]
    sizes = (SMALL,)
    if args.quick:
        args.steps, sizes = 3, (32,)
        import importlib.util

        if importlib.util.find_spec("timm") is None:
            print("timm: not installed (pip install -e '.[bench]'); --quick sweeps torchvision only")
            zoos = ["torchvision"]
    print(f"{args.steps} steps per run, runs: {', '.join(o + (' bf16 autocast' if a else ' fp32') for o, a in CONFIGS)}; "
          f"batch {BATCH}, {CLASSES} random classes, CPU threads {torch.get_num_threads()}", flush=True)
    for zoo in zoos:
        only = QUICK[zoo] if args.quick else (tuple(args.only) if args.only else None)
        rows = sweep(zoo, only, args.steps, args.max_params, args.limit, sizes, 1 if only else args.sample)
        trained = [r for r in rows if r.skipped is None]
        print(f"\n{'model':<44} {'params':>12} {'px':>4} {'runs':>5} {'flagged':>8} {'seconds':>8}")
        for r in trained:
            print(f"{r.name:<44} {r.params:>12,} {r.size:>4} {r.runs:>5} {len(r.flagged):>8} {r.seconds:>8.1f}")
        flagged = [r for r in trained if any("could not train" not in f for f in r.flagged)]
        failed_runs = sum(1 for r in trained for f in r.flagged if "could not train" in f)
        runs = sum(r.runs for r in trained)
        at_default = sum(r.size != sizes[0] for r in trained)
        print(f"\n{zoo}: {len(trained)} models trained ({runs} runs of {args.steps} steps, {at_default} at their default "
              f"size), {len(flagged)} with warning/error findings, {failed_runs} runs could not train, "
              f"{len(rows) - len(trained)} skipped, {sum(r.seconds for r in trained):.0f} s")
        for r in rows:
            if r.skipped:
                print(f"  skipped {r.name}: {r.skipped}")
        findings = sum(1 for r in trained for f in r.flagged if "could not train" not in f)
        what = "classification builders" if zoo == "torchvision" else "first model of each architecture module"
        sample = (f", 1 in {args.sample}" if args.sample > 1 else "") + (f", first {args.limit}" if args.limit else "")
        sample += f", <= {args.max_params / 1e6:.0f}M params"
        record(f"watch: {zoo} clean training ({what}{sample}), warning/error findings",
               f"{findings} in {len(trained)} models ({runs} runs)",
               f"{args.steps} steps x SGD/AdamW x fp32/bf16 autocast; {len(rows) - len(trained)} skipped",
               None, "0 findings", findings == 0)


if __name__ == "__main__":
    main()
