"""Where the forward probe runs: on the meta device (no parameter memory), or on a CPU copy with random weights
(or, over the memory budget, with placeholder weights: ``placeholder``).

A model built on the meta device often cannot run forward there for reasons that have nothing to do with the model:
``.item()`` on a meta tensor, an operator without a meta kernel, a shape that depends on values. The checks that
need a forward pass (R004, R005, R008) then never run. ``--probe-device auto`` rebuilds such a model on the CPU
(random weights, nothing downloaded) when its parameters and buffers fit a memory budget, and probes it there;
a larger model is probed on a CPU copy of the meta model whose weights share a few small blocks
(``placeholder.placeholder_copy``). ``ProbePlacement`` records which device the probe used and why, for the report.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from ssdaudit.core.errors import UsageError

PROBE_DEVICES = ("auto", "meta", "cpu")
BUILT_THERE = "built there"  # the probe ran where the model was built
BUDGET_FRACTION = 0.5  # of the memory available now: the default budget for a CPU copy of a meta-built model
_FALLBACK_AVAILABLE = 8 * 2**30  # bytes assumed available where the system does not say
PROBE_PEAK_FACTOR = 4  # a CPU probe's peak memory, in multiples of the model's bytes: see over_budget

# (pattern in the meta probe's error, what the report calls it): failures that say nothing about the model
_META_REASONS = (
    (re.compile(r"can't allocate memory|cannot allocate memory|MemoryError|out of memory", re.I),
     "out of memory within the --probe-memory budget (raise it)"),
    (re.compile(r"\.item\(\)|cannot be called on meta tensors", re.I), ".item() on a meta tensor"),
    (re.compile(r"data.dependent|nonzero|unbacked|masked_select|meta tensor without output_size", re.I),
     "a data-dependent shape"),
    (re.compile(r"copy out of meta|cannot copy out", re.I), "a copy out of a meta tensor"),
    (re.compile(r"Tensor\.tolist|tolist\(\)", re.I), ".tolist() on a meta tensor"),
    (re.compile(r"Expected \w+ to be (BFloat16|Half|Float16)|supported Float16", re.I),
     "a kernel that needs another dtype"),
    (re.compile(r"meta.*(kernel|implementation|not implemented)|NotImplementedError", re.I),
     "an operator without a meta kernel"),
)


@dataclass
class ProbePlacement:
    """Which device the forward probe ran on ("meta" or "cpu", or "none" when no probe ran) and why, one phrase."""

    device: str
    reason: str

    def describe(self) -> str:
        """``probe: cpu (meta failed: .item() on a meta tensor)``: the line the text report prints."""
        return f"probe: {self.device} ({self.reason})"

    def to_dict(self) -> dict[str, str]:
        return {"device": self.device, "reason": self.reason}


def model_bytes(model: Any) -> int:
    """Bytes the model's registered parameters and buffers take once materialised (shared tensors once)."""
    seen: dict[int, int] = {}
    for t in (*model.parameters(), *model.buffers()):
        seen.setdefault(id(t), t.numel() * t.element_size())
    return sum(seen.values())


def proc_bytes(path: str, key: str) -> int | None:
    """Bytes from a ``/proc`` table line ``key: N kB`` (``/proc/meminfo`` MemAvailable, ``/proc/self/status``
    VmSize), or None where the file or the line is missing (not Linux)."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable`` on Linux; else free pages; else 8 GiB assumed)."""
    found = proc_bytes("/proc/meminfo", "MemAvailable")
    if found is not None:
        return found
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return _FALLBACK_AVAILABLE


def default_budget() -> int:
    """The default ``--probe-memory``: half the memory available now, in bytes."""
    return int(available_memory() * BUDGET_FRACTION)


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def parse_memory(text: str | None) -> int | None:
    """Bytes from ``--probe-memory`` ("4GiB", "512M", "1.5g", "1000000"); ``None`` or "auto": the default budget
    (returned as None). Raises ``UsageError`` for anything else."""
    if text is None or text.strip().lower() == "auto":
        return None
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS or float(m.group(1)) <= 0:
        raise UsageError(f"bad --probe-memory {text!r}: give a size such as 4GiB, 512MB or auto")
    return int(float(m.group(1)) * _UNITS[unit])


def human_bytes(n: int) -> str:
    """``1.5 GiB``, ``300.0 MiB``, ``12 KiB``: binary units, for messages."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 2**10:.0f} KiB" if n >= 2**10 else f"{n} bytes"


def meta_reason(error: str) -> str:
    """The short name of a meta probe's failure for the report (".item() on a meta tensor"), else its first 80
    characters."""
    for pattern, name in _META_REASONS:
        if pattern.search(error):
            return name
    return error[:80] + ("..." if len(error) > 80 else "")


def check_probe_device(probe_device: str, device: str) -> None:
    """Raises ``UsageError`` for an unknown ``--probe-device`` or for ``meta`` on a model built on the CPU."""
    if probe_device not in PROBE_DEVICES:
        raise UsageError(f"bad --probe-device {probe_device!r}: give auto, meta or cpu")
    if probe_device == "meta" and device != "meta":
        raise UsageError("--probe-device meta needs --device meta: a model built on the CPU is probed there")


def over_budget(model: Any, budget: int | None) -> tuple[int, int, bool]:
    """(bytes a probe of the model on a CPU copy with random weights needs at its peak, the budget in bytes, whether
    it is over); ``budget`` None: the default. The peak is ``PROBE_PEAK_FACTOR`` times the model's parameters and
    buffers: the copy itself, the dtype-move probe's deep copy of it, and that copy converted to float64."""
    need = model_bytes(model) * PROBE_PEAK_FACTOR
    limit = default_budget() if budget is None else budget
    return need, limit, need > limit
