"""`ssdaudit lint` throughput over the installed torchvision package's source (and its findings: goal zero), then
over Hugging Face transformers' ``models/`` and timm's source where installed (pip install -e '.[bench]'): every
finding left there is printed, to be read as a real bug or a false alarm.

Run: python benchmarks/lint_speed.py [--quick]
(--quick: torchvision's ops/ once, transformers' models/bert and timm's layers/ where installed, and this
repository's examples/, whose seed bug gives one finding to print: seconds, a smoke run of the same code)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torchvision

from ssdaudit.core.findings import Location
from ssdaudit.lint.engine import lint_paths

ROOT = Path(__file__).resolve().parents[1]


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import record, set_quick  # noqa: E402


def relative(location: Location | None, source: Path) -> str:
    """``location`` as "path:line:col" with the path relative to ``source`` (as given where it lies elsewhere)."""
    if location is None:
        return ""
    try:
        return str(location.with_path(str(Path(location.path).relative_to(source))))
    except ValueError:
        return str(location)


def main(quick: bool = False) -> None:
    package = Path(torchvision.__file__).parent
    source = package / "ops" if quick else package
    repeats = 1 if quick else 3
    if not quick:
        lint_paths([source])  # warm the file cache
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = lint_paths([source])
        runs.append(time.perf_counter() - start)
    seconds = min(runs)
    lines = sum(len(p.read_text(errors="replace").splitlines()) for p in source.rglob("*.py"))
    start = time.perf_counter()
    cli = subprocess.run([sys.executable, "-m", "ssdaudit.cli", "lint", str(source)], capture_output=True, text=True)
    cli_wall = time.perf_counter() - start
    what = f"torchvision {torchvision.__version__}{' ops/' if quick else ''}"
    print(f"{what}: {result.files} files, {lines:,} lines")
    print(f"{'what':34} {'seconds':>8} {'files/s':>8} {'lines/s':>10}")
    print(f"{'lint_paths (in process)':34} {seconds:8.2f} {result.files / seconds:8.0f} {lines / seconds:10,.0f}")
    print(f"{'ssdaudit lint CLI (whole process)':34} {cli_wall:8.2f} {result.files / cli_wall:8.0f} {lines / cli_wall:10,.0f}")
    print(f"findings: {len(result.findings)} (goal 0), unparsable files: {len(result.errors)}, CLI exit {cli.returncode}")
    for f in result.findings:
        print(f"  {relative(f.location, source)} {f.rule} {f.message[:120]}")
    record(f"lint: torchvision {'ops/' if quick else 'source'}", f"{result.files / seconds:.0f} files/s, {len(result.findings)} findings",
           f"{result.files} files, {lines:,} lines", None, "0 findings", not result.findings)


def other_packages(quick: bool = False) -> None:
    """Lint transformers' models/ and timm's source; print each error/warning finding with its location."""
    import importlib

    targets: list[tuple[str, str, list[Path], Path]] = []  # title, row label, paths to lint, base of the printed paths
    for package, sub, quick_sub in (("transformers", "models", "models/bert"), ("timm", "", "layers")):
        try:
            module = importlib.import_module(package)
        except ImportError:
            print(f"{package}: not installed (pip install -e '.[bench]')")
            continue
        part = quick_sub if quick else sub
        source = Path(module.__file__).parent / part
        targets.append((f"{package} {module.__version__} {part}".rstrip(), f"{package} {part or 'source'}", [source], source))
    if quick:  # the seed's bug (R001 in examples/buggy_plain_list.py): a finding with a location, for the printing below
        targets.append(("this repository's examples/ and ssdlite_model/", "examples/ + ssdlite_model/",
                        [ROOT / "examples", ROOT / "ssdlite_model"], ROOT))
    for title, label, paths, source in targets:
        start = time.perf_counter()
        result = lint_paths(paths)
        seconds = time.perf_counter() - start
        gating = [f for f in result.findings if f.severity.value != "info"]
        print(f"\n{title}: {result.files} files in {seconds:.1f} s, "
              f"{len(gating)} error/warning findings, {len(result.findings) - len(gating)} notes")
        for f in gating:
            print(f"  {relative(f.location, source)} {f.rule} {f.message[:120]}")
        record(f"lint: {label}", f"{len(gating)} findings in {result.files} files",
               f"{seconds:.1f} s", None, "every finding a real bug", None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sources, one run: a smoke run of the same code")
    args = parser.parse_args()
    set_quick(args.quick)
    main(args.quick)
    other_packages(args.quick)
