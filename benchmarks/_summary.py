"""Shared by the benchmarks: one summary row per measured goal, collected by benchmarks/run_all.py.

A benchmark calls ``record(...)``; when run by run_all.py (SSDAUDIT_BENCH_JSON set) the rows are appended to that
file, otherwise nothing happens beyond the benchmark's own printed table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def record(name: str, ours: str, comparison: str, ratio: float | None, goal: str, met: bool | None) -> None:
    target = os.environ.get("SSDAUDIT_BENCH_JSON")
    if not target:
        return
    path = Path(target)
    rows = json.loads(path.read_text()) if path.exists() else []
    rows.append({"name": name, "ours": ours, "comparison": comparison, "ratio": ratio, "goal": goal, "met": met})
    path.write_text(json.dumps(rows, indent=2))
