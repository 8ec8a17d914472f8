"""Every script in benchmarks/ runs end to end in its --quick mode (tiny sizes, the same code paths), and the summary
rows it writes for benchmarks/run_all.py parse and carry the keys run_all reads.

A smoke test, not a measurement: nothing here asserts a timing. The scripts run as subprocesses from the
repository root, two at a time (one torch thread each), all queued by the module's fixture on first use: about
150 s of CPU in all, so about 80 s of wall time on 2 otherwise idle cores.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

# gpu_trust prints a pass/fail table and its exit code; it writes no summary rows.
NO_ROWS = {"gpu_trust", "t021_min_steps", "zoo_findings"}  # and two measurements that print tables
# Every benchmark script, most CPU time first (about 27, 26, 24, 12, 20, 11, 10, 9, 7, 7, 6 and 6 s; run_all's meta_7b
# comes last), so that the two workers finish together.
ORDER = ["gpu_trust", "diff_speed", "params_speed", "gpu_suite", "train_sweep", "inference_speed", "train_synthetic", "lint_speed",
         "coco_eval_speed", "gradflow_overhead", "watch_overhead", "watch_syncs", "resume_overhead", "meta_7b", "zoo_sweep",
         "zoo_findings", "t021_min_steps"]
KEYS = {"name", "ours", "comparison", "ratio", "goal", "met"}  # what run_all.py reads from each row
TIMEOUT = 300


def test_every_benchmark_is_covered():
    helpers = {"_summary", "_steps", "run_all"}
    on_disk = {p.stem for p in BENCH.glob("*.py")} - helpers
    assert on_disk == set(ORDER)


ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # two at a time on 2 cores


def _run(name: str, out: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """``benchmarks/NAME.py --quick`` with its rows written to OUT/NAME.json; for "run_all", run_all.py --quick on one
    cheap benchmark with OUT/run_all as its output folder."""
    if name == "run_all":
        target = out / "run_all"
        cmd = [str(BENCH / "run_all.py"), "--quick", "--only", "meta_7b", "--out", str(target)]
        env = {k: v for k, v in os.environ.items() if k != "SSDAUDIT_BENCH_JSON"}
    else:
        target = out / f"{name}.json"
        cmd = [str(BENCH / f"{name}.py"), "--quick"]
        env = {**os.environ, "SSDAUDIT_BENCH_JSON": str(target)}
    proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, env={**env, **ENV}, capture_output=True, text=True,
                          timeout=TIMEOUT)
    return proc, target


@pytest.fixture(scope="module")
def quick_runs(request, tmp_path_factory):
    """name -> Future of (CompletedProcess, output path): every selected run of this file, all started on first use,
    two at a time."""
    out = tmp_path_factory.mktemp("bench_quick")
    mine = [item for item in request.session.items if item.module is request.module]
    wanted = {item.callspec.params["name"] for item in mine if hasattr(item, "callspec") and "name" in item.callspec.params}
    if any(item.name == "test_run_all_quick_collects_the_rows" for item in mine):
        wanted.add("run_all")
    pool = ThreadPoolExecutor(max_workers=2)
    futures: dict[str, Future] = {name: pool.submit(_run, name, out) for name in [*ORDER, "run_all"] if name in wanted}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def check_rows(path: Path, extra: frozenset[str] = frozenset()) -> list[dict]:
    rows = json.loads(path.read_text())
    assert isinstance(rows, list) and rows
    for row in rows:
        assert set(row) == KEYS | extra, row
        assert all(isinstance(row[k], str) and row[k] for k in ("name", "ours", "comparison", "goal")), row
        assert row["ratio"] is None or (isinstance(row["ratio"], (int, float)) and math.isfinite(row["ratio"])), row
        # a quick run says nothing about the goals: its rows are marked and claim no goal met or missed
        assert row["name"].endswith("(quick)") and row["met"] is None, row
    return rows


@pytest.mark.parametrize("name", ORDER)
def test_quick_run(name, quick_runs):
    proc, target = quick_runs[name].result()  # each run has its own TIMEOUT
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name} --quick exit {proc.returncode}:\n{output[-4000:]}"
    assert proc.stdout.strip(), f"{name} --quick printed nothing"
    if name in NO_ROWS:
        assert not target.exists()
    else:
        assert target.exists(), f"{name} --quick wrote no summary rows:\n{output[-2000:]}"
        check_rows(target)
    if name == "lint_speed":  # the seed's finding, its Location printed relative to the repository (this crashed before)
        assert re.search(r"^  examples/buggy_plain_list\.py:\d+:\d+ R001 ", proc.stdout, re.M), proc.stdout
    if name == "gpu_trust":  # with --quick it runs its checks (on the CPU where there is no CUDA), never skips
        assert "\n0 failures" in proc.stdout, proc.stdout


def test_run_all_quick_collects_the_rows(quick_runs):
    """run_all.py --quick passes --quick on and builds its table from the rows (one cheap benchmark here)."""
    proc, out = quick_runs["run_all"].result()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = check_rows(out / "results.json", frozenset({"benchmark"}))
    assert [r["benchmark"] for r in rows] == ["meta_7b"]
    assert "--quick" in (out / "meta_7b.txt").read_text()
    table = (out / "results.md").read_text().splitlines()
    assert table[0].startswith("| benchmark |") and len(table) == 2 + len(rows)
    assert "tiny transformer on meta (quick)" in table[2]
    assert "running meta_7b --quick" in proc.stdout
