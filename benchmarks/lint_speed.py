"""`ssdaudit lint` throughput over the installed torchvision package's source (and its findings: goal zero).

Run: python benchmarks/lint_speed.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torchvision

from ssdaudit.source_lint import lint_paths

ROOT = Path(__file__).resolve().parents[1]


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import record  # noqa: E402


def main() -> None:
    source = Path(torchvision.__file__).parent
    lint_paths([source])  # warm the file cache
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        result = lint_paths([source])
        runs.append(time.perf_counter() - start)
    seconds = min(runs)
    lines = sum(len(p.read_text(errors="replace").splitlines()) for p in source.rglob("*.py"))
    start = time.perf_counter()
    cli = subprocess.run([sys.executable, "-m", "ssdaudit.cli", "lint", str(source)], capture_output=True, text=True)
    cli_wall = time.perf_counter() - start
    print(f"torchvision {torchvision.__version__}: {result.files} files, {lines:,} lines")
    print(f"{'what':34} {'seconds':>8} {'files/s':>8} {'lines/s':>10}")
    print(f"{'lint_paths (in process)':34} {seconds:8.2f} {result.files / seconds:8.0f} {lines / seconds:10,.0f}")
    print(f"{'ssdaudit lint CLI (whole process)':34} {cli_wall:8.2f} {result.files / cli_wall:8.0f} {lines / cli_wall:10,.0f}")
    print(f"findings: {len(result.findings)} (goal 0), unparsable files: {len(result.errors)}, CLI exit {cli.returncode}")
    record("lint: torchvision source", f"{result.files / seconds:.0f} files/s, {len(result.findings)} findings",
           f"{result.files} files, {lines:,} lines", None, "0 findings", not result.findings)


if __name__ == "__main__":
    main()
