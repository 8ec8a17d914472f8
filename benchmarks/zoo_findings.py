"""The ``ssdaudit params`` JSON report of every model of a zoo sample, one JSON line per model: the evidence for
"the findings are identical before and after" a refactoring (run it once with each tree first on PYTHONPATH, then
``--compare`` the two files).

    PYTHONPATH=/path/to/tree python benchmarks/zoo_findings.py --zoo torchvision --out before_tv.jsonl
    PYTHONPATH=/path/to/tree python benchmarks/zoo_findings.py --zoo timm --every 25 --out before_timm.jsonl
    PYTHONPATH=/path/to/tree python benchmarks/zoo_findings.py --zoo transformers --sample 92 --out before_hf.jsonl
    python benchmarks/zoo_findings.py --compare before_tv.jsonl after_tv.jsonl

Each model goes through ``audit_target("LIB:NAME", device="meta", probe_memory=4 GiB, roundtrip=False)``, as
``ssdaudit params LIB:NAME --device meta --probe-memory 4GiB --no-roundtrip`` does. The model lists are
deterministic: torchvision's every builder, timm's every k-th name of ``timm.list_models()`` plus the first model
of its popular families, transformers' ``--sample`` model types evenly spaced over ``CONFIG_MAPPING`` (as
``zoo_sweep.py --sample`` takes them). Only the standard library and ``audit_target`` are used, so the script runs
against an older tree too.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import warnings
from typing import Any

POPULAR_TIMM = ("resnet18", "resnet50", "vit_tiny_patch16_224", "vit_base_patch16_224", "efficientnet_b0",
                "efficientnet_b3", "convnext_tiny", "convnext_small", "mobilenetv3_small_100", "mobilenetv3_large_100",
                "regnetx_002", "regnety_016")


def evenly(entries: list[str], n: int) -> list[str]:
    """``n`` entries evenly spaced over the list (``zoo_sweep._sample``'s choice)."""
    if n >= len(entries):
        return entries
    return [entries[(i * len(entries)) // n] for i in range(n)]


def names(zoo: str, every: int, sample: int | None) -> list[str]:
    """The model names of the sample, in a fixed order."""
    if zoo == "torchvision":
        import torchvision

        listed = list(torchvision.models.list_models())
        return evenly(listed, sample) if sample else listed
    if zoo == "timm":
        import timm

        listed = list(timm.list_models())
        chosen = listed[::every]
        return chosen + [n for n in POPULAR_TIMM if n in listed and n not in chosen]
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return evenly(sorted(CONFIG_MAPPING.keys()), sample or 92)


def audit(spec: str, timeout: float) -> dict[str, Any]:
    """The report's JSON, or the error that stopped it (its class and first line)."""
    from ssdaudit.registration.pipeline import audit_target

    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = audit_target(spec, device="meta", probe_memory=4 * 2**30, roundtrip=False, timeout=timeout)
        out: dict[str, Any] = {"report": report.to_dict()}
    except Exception as exc:  # a model that cannot be built here is a row too: it must fail the same way after
        out = {"error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def compare(before: str, after: str) -> int:
    """Print the models whose report (or error) differs; 1 when any does."""
    def load(path: str) -> dict[str, dict[str, Any]]:
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return {r["name"]: r for r in rows}

    a, b = load(before), load(after)
    same = findings_same = 0
    differ = []
    for name in a:
        if name not in b:
            continue
        ra, rb = ({k: v for k, v in r.items() if k != "seconds"} for r in (a[name], b[name]))
        fa, fb = (r.get("report", {}).get("findings") if "report" in r else r.get("error") for r in (ra, rb))
        findings_same += fa == fb
        if ra == rb:
            same += 1
        else:
            differ.append(name)
    both = [n for n in a if n in b]
    print(f"{len(both)} models in both ({len(a)} before, {len(b)} after): {same} reports identical, "
          f"{findings_same} finding lists identical, {len(differ)} reports differ")
    for name in differ:
        print(f"  differs: {name}")
        ra, rb = a[name], b[name]
        for key in sorted(set(ra.get("report", {})) | set(rb.get("report", {}))):
            va, vb = ra.get("report", {}).get(key), rb.get("report", {}).get(key)
            if va != vb:
                print(f"    {key}: before {json.dumps(va)[:400]}\n    {' ' * len(key)}  after  {json.dumps(vb)[:400]}")
        if ra.get("error") != rb.get("error"):
            print(f"    error: before {ra.get('error')} / after {rb.get('error')}")
    return 1 if differ else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", choices=("torchvision", "timm", "transformers"), default="torchvision")
    parser.add_argument("--every", type=int, default=25, help="timm: every k-th name of timm.list_models().")
    parser.add_argument("--sample", type=int, default=None, help="N names evenly spaced (transformers: 92).")
    parser.add_argument("--spread", action="store_true",
                        help="Audit the sample in a fixed shuffled order (seed 0): a run cut short still covers the "
                        "whole list evenly, and two runs cover the same models first.")
    parser.add_argument("--timeout", type=float, default=300.0, help="Seconds per model (audit_target's limit).")
    parser.add_argument("--out", help="The JSON lines file to write (appended per model as it finishes).")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows already in --out and audit only the models it lacks (a run cut short "
                        "goes on where it stopped)")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="Compare two such files.")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: two torchvision builders, written and compared with themselves")
    args = parser.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    if args.quick:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            out = f"{tmp}/quick.jsonl"
            with open(out, "w") as f:
                for name in names("torchvision", args.every, None)[:2]:
                    f.write(json.dumps({"name": name, **audit(f"torchvision:{name}", args.timeout)}, sort_keys=True)
                            + "\n")
            sys.exit(compare(out, out))
    prefix = {"torchvision": "torchvision", "timm": "timm", "transformers": "hf"}[args.zoo]
    chosen = names(args.zoo, args.every, args.sample)
    if args.spread:
        random.Random(0).shuffle(chosen)
    done: set[str] = set()
    if args.resume:
        try:
            with open(args.out) as f:
                done = {json.loads(line)["name"] for line in f if line.strip()}
        except FileNotFoundError:
            pass
        chosen = [n for n in chosen if n not in done]
    print(f"{args.zoo}: {len(chosen)} models ({len(done)} already in {args.out})", flush=True)
    with open(args.out, "a" if args.resume else "w") as f:
        for name in chosen:
            row = {"name": name, **audit(f"{prefix}:{name}", args.timeout)}
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            print(f"{name}: {row['seconds']} s {row.get('error', '')}", flush=True)


if __name__ == "__main__":
    main()
