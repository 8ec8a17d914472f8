"""Run every benchmark (`make bench`) and print one table: name, this project, the comparison, ratio, goal.

Writes out/bench/results.json, out/bench/results.md (the table the README includes) and each benchmark's full
output in out/bench/<name>.txt. Benchmarks run one after another, each in its own process.
Run: python benchmarks/run_all.py [--only NAME ...] [--train-minutes 10]
     python benchmarks/run_all.py --quick   (`make bench-quick`: each benchmark's --quick smoke run, a few minutes in
                                             all; into out/bench/quick/, so the full run's table stays as it is)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "bench"
BENCHMARKS = ["params_speed", "zoo_sweep", "meta_7b", "diff_speed", "gradflow_overhead", "watch_overhead", "resume_overhead", "train_sweep", "lint_speed",
              "coco_eval_speed",
              "inference_speed", "train_synthetic"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run just these")
    parser.add_argument("--train-minutes", type=float, default=None, help="budget per model in train_synthetic (default 10)")
    parser.add_argument("--quick", action="store_true",
                        help="pass --quick to each: tiny sizes, seconds each, a smoke run (its rows say nothing of the goals)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default out/bench, or out/bench/quick with --quick)")
    args = parser.parse_args()
    out: Path = args.out or (OUT / "quick" if args.quick else OUT)
    out.mkdir(parents=True, exist_ok=True)
    rows, failures = [], []
    for name in args.only or BENCHMARKS:
        target = out / f"{name}.json"
        target.unlink(missing_ok=True)
        cmd = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py")]
        if args.quick:
            cmd.append("--quick")
        if name == "train_synthetic" and (args.train_minutes is not None or not args.quick):
            cmd += ["--minutes", str(args.train_minutes or 10.0)]
        print(f"running {name}{' --quick' if args.quick else ''} ...", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "SSDAUDIT_BENCH_JSON": str(target)})
        (out / f"{name}.txt").write_text(proc.stdout + proc.stderr)
        print(f"  {name}: exit {proc.returncode} in {time.perf_counter() - start:.0f} s", flush=True)
        if proc.returncode != 0:
            failures.append(name)
            continue
        rows += [{**r, "benchmark": name} for r in json.loads(target.read_text())] if target.exists() else []
    if args.only and (out / "results.json").exists():  # keep the other benchmarks' rows from the last full run
        ran = set(args.only)
        previous = [r for r in json.loads((out / "results.json").read_text()) if r.get("benchmark") not in ran]
        order = {n: i for i, n in enumerate(BENCHMARKS)}
        rows = sorted(previous + rows, key=lambda r: order.get(r.get("benchmark"), 99))
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    table = ["| benchmark | this project | comparison | ratio | goal | met |", "|---|---|---|---:|---|---|"]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        table.append(f"| {r['name']} | {r['ours']} | {r['comparison']} | {ratio} | {r['goal']} | {met} |")
    (out / "results.md").write_text("\n".join(table) + "\n")
    print()
    print("\n".join(table))
    if args.quick:
        print("\n--quick: tiny sizes, a smoke run of each benchmark's code; the figures are not the benchmarks'")
    if failures:
        print(f"\nfailed: {', '.join(failures)} (see {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}/<name>.txt)")
        sys.exit(1)


if __name__ == "__main__":
    main()
