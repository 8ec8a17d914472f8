"""`ssdaudit lint` throughput over the installed torchvision package's source (and its findings: goal zero), then
over Hugging Face transformers' ``models/`` and timm's source where installed (pip install -e '.[bench]'): every
finding left there is printed, to be read as a real bug or a false alarm.

Run: python benchmarks/lint_speed.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torchvision

from ssdaudit.lint.engine import lint_paths

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


def other_packages() -> None:
    """Lint transformers' models/ and timm's source; print each error/warning finding with its location."""
    import importlib

    for package, sub in (("transformers", "models"), ("timm", "")):
        try:
            module = importlib.import_module(package)
        except ImportError:
            print(f"{package}: not installed (pip install -e '.[bench]')")
            continue
        source = Path(module.__file__).parent / sub
        start = time.perf_counter()
        result = lint_paths([source])
        seconds = time.perf_counter() - start
        gating = [f for f in result.findings if f.severity.value != "info"]
        print(f"\n{package} {module.__version__} {sub or ''}: {result.files} files in {seconds:.1f} s, "
              f"{len(gating)} error/warning findings, {len(result.findings) - len(gating)} notes")
        for f in gating:
            print(f"  {Path(f.location).relative_to(source) if f.location else ''} {f.rule} {f.message[:120]}")
        record(f"lint: {package} {sub or 'source'}", f"{len(gating)} findings in {result.files} files",
               f"{seconds:.1f} s", None, "every finding a real bug", None)


if __name__ == "__main__":
    main()
    other_packages()
