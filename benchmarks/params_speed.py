"""`ssdaudit params` on SSDLite against torchinfo.summary on the same model, in one run.

Goals: the audit adds less than 0.5 s beyond `import torch, torchvision` (walk + probe, --no-roundtrip); the
save-reload round trip (R007) and the device-move check (R008) together add at most 2x the probe's own time.
Run: python benchmarks/params_speed.py [--quick]   (--quick: each measurement once instead of the best of 3, and the
CLI with the round trip not run (the in-process round trip is): a smoke run)
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 3


_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _summary import record, set_quick  # noqa: E402


def wall(cmd: list[str]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        subprocess.run(cmd, check=False, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def best_of(fn, repeats: int | None = None) -> float:
    times = []
    for _ in range(repeats or REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def symptom_checks() -> tuple[float, float, float]:
    """(probe, R008, R007) seconds on the fixed SSDLite, each its own step, in one process."""
    sys.path.insert(0, str(ROOT / "examples"))
    import fixed_modulelist

    from ssdaudit import find_unregistered
    from ssdaudit.registration.unregistered import moved_by_to
    from ssdaudit.registration.roundtrip import roundtrip_findings

    model, x = fixed_modulelist.build_model(), fixed_modulelist.example_input()
    find_unregistered(model, x)  # warm-up: first-call costs are not the probe's
    probe_with_move = best_of(lambda: find_unregistered(model, x))
    move = best_of(lambda: moved_by_to(model))  # R008's own work; the reads it needs are the probe's
    reload = best_of(lambda: roundtrip_findings(fixed_modulelist.build_model, x, []))
    return probe_with_move - move, move, reload


def in_process() -> tuple[float, float]:
    import torch
    import torchinfo

    sys.path.insert(0, str(ROOT / "examples"))
    import fixed_modulelist

    from ssdaudit import audit_params

    model, x = fixed_modulelist.build_model(), fixed_modulelist.example_input()
    start = time.perf_counter()
    audit_params(model, example_input=x)
    audit = time.perf_counter() - start
    start = time.perf_counter()
    torchinfo.summary(model, input_data=x, verbose=0)
    info = time.perf_counter() - start
    del torch
    return audit, info


def main() -> None:
    global REPEATS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each measurement once, no CLI run with the round trip: a smoke run")
    args = parser.parse_args()
    set_quick(args.quick)
    if args.quick:
        REPEATS = 1
    py = sys.executable
    floor = wall([py, "-c", "import torch, torchvision"])
    cli = wall([py, "-m", "ssdaudit.cli", "params", "examples/fixed_modulelist.py", "--reference", "ssds-voc", "--no-roundtrip"])
    cli_rt = None if args.quick else wall([py, "-m", "ssdaudit.cli", "params", "examples/fixed_modulelist.py", "--reference", "ssds-voc"])
    audit, info = in_process()
    probe, move, reload = symptom_checks()
    print(f"{'measurement':<52} {'seconds':>8}")
    print(f"{'import torch, torchvision (floor)':<52} {floor:>8.2f}")
    print(f"{'ssdaudit params fixed_modulelist.py -r ssds-voc --no-roundtrip':<52} {cli:>8.2f}")
    print(f"{'  beyond the floor (goal < 0.5 s)':<52} {cli - floor:>8.2f}")
    print(f"{'  the same with the round trip (default)':<52} {'--quick: not run' if cli_rt is None else f'{cli_rt:8.2f}':>8}")
    print(f"{'forward probe (walk, train + eval pass)':<52} {probe:>8.2f}")
    print(f"{'device-move check R008 (identity _apply)':<52} {move:>8.3f}")
    print(f"{'round trip R007 (2 builds, 1 train + 2 one-sample eval passes)':<52} {reload:>8.2f}")
    print(f"{'  (R007 + R008) / probe (goal <= 2)':<52} {(move + reload) / probe:>8.2f}")
    print(f"{'audit_params() in process (walk+probe+bytes)':<52} {audit:>8.2f}")
    print(f"{'torchinfo.summary() in process':<52} {info:>8.2f}")
    print(f"{'ratio audit / torchinfo':<52} {audit / info:>8.2f}")
    record("params: CLI time beyond import torch", f"{cli - floor:.2f} s", f"floor {floor:.2f} s", (cli - floor) / 0.5,
           "< 0.5 s", cli - floor < 0.5)
    ratio = (move + reload) / probe
    record("params: R007 + R008 time vs the probe's", f"{move + reload:.2f} s", f"probe {probe:.2f} s", ratio, "<= 2x",
           ratio <= 2)
    record("params: audit_params vs torchinfo.summary", f"{audit:.2f} s", f"torchinfo {info:.2f} s", audit / info, "report", None)


if __name__ == "__main__":
    main()
