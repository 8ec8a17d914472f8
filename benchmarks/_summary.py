"""Shared by the benchmarks: one summary row per measured goal, collected by benchmarks/run_all.py.

A benchmark calls ``record(...)``; when run by run_all.py (SSDAUDIT_BENCH_JSON set) the rows are appended to that
file, otherwise nothing happens beyond the benchmark's own printed table.

``--quick`` (every benchmark has it): tiny sizes, seconds, the same code paths; a smoke run, not a measurement.
A benchmark calls ``set_quick()`` then, and its rows are named "... (quick)" with ``met`` None: tiny sizes say
nothing about the goal, so a quick run never claims one met or missed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

_QUICK = False


def set_quick(on: bool = True) -> None:
    global _QUICK
    _QUICK = on


def record(name: str, ours: str, comparison: str, ratio: float | None, goal: str, met: bool | None) -> None:
    target = os.environ.get("SSDAUDIT_BENCH_JSON")
    if not target:
        return
    if _QUICK:
        name, met = f"{name} (quick)", None
    path = Path(target)
    rows = json.loads(path.read_text()) if path.exists() else []
    rows.append({"name": name, "ours": ours, "comparison": comparison, "ratio": ratio, "goal": goal, "met": met})
    path.write_text(json.dumps(rows, indent=2))
