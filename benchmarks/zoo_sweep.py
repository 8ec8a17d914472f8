"""Audit every torchvision model builder (weights=None, built on the meta device) and count findings.

Goal (issue: ssdaudit params): zero error or warning findings. Classification models also get a
forward probe with a meta 1x3x224x224 input. Run: python benchmarks/zoo_sweep.py
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

import time

import torch
import torchvision

from ssdaudit import Severity, find_unregistered

PROBE_INPUT = {"classification": (1, 3, 224, 224)}


_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _summary import record  # noqa: E402


def build(name: str) -> tuple[torch.nn.Module, str]:
    """The builder with no weights at all (detectors default to ImageNet backbones), on the meta device
    where it can be built there, else on the CPU."""
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                try:
                    return torchvision.models.get_model(name, weights=None, weights_backbone=None), device
                except TypeError:
                    return torchvision.models.get_model(name, weights=None), device
        except NotImplementedError:
            continue
    raise RuntimeError(f"cannot build {name}")


def sweep() -> list[tuple[str, int, int, int, float]]:
    rows = []
    classification = set(torchvision.models.list_models(module=torchvision.models))
    for name in torchvision.models.list_models():
        start = time.perf_counter()
        model, device = build(name)
        model.eval()
        example = None
        if name in classification and "inception" not in name:
            example = torch.rand(*PROBE_INPUT["classification"], device=device)
        try:
            findings = find_unregistered(model, example)
        except Exception:  # data-dependent ops on meta: fall back to the walk alone
            findings = find_unregistered(model, None)
        errors = sum(f.severity is Severity.ERROR for f in findings)
        warnings = sum(f.severity is Severity.WARNING for f in findings)
        params = sum(p.numel() for p in model.parameters())
        rows.append((name, params, errors, warnings, time.perf_counter() - start))
        for f in findings:
            if f.severity is not Severity.INFO:
                print(f"  {name}: {f.rule} {f.path}: {f.message}")
    return rows


def main() -> None:
    rows = sweep()
    print(f"{'model':<40} {'params':>14} {'errors':>7} {'warnings':>9} {'seconds':>8}")
    for name, params, e, w, s in rows:
        print(f"{name:<40} {params:>14,} {e:>7} {w:>9} {s:>8.2f}")
    bad = [r for r in rows if r[2] or r[3]]
    print(f"\n{len(rows)} torchvision builders audited, {len(bad)} with error/warning findings, "
          f"{sum(r[4] for r in rows):.1f} s in all")
    record("params: torchvision zoo false positives", f"{len(bad)} of {len(rows)} builders", "0 expected", None,
           "0 findings", not bad)


if __name__ == "__main__":
    main()
