"""Finding unregistered members: ``find_unregistered``, the library's entry point for rules R001-R006, R008, R011.

The evidence and the rules are ``inspection.inspect_unregistered``'s; where the probe runs, and what happens when
it fails on the meta device, is the plan's (``plan.probe_plan``), the same for ``ssdaudit params``, ``ssdaudit
check`` and the pytest plugin.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ssdaudit.core.findings import Finding
from ssdaudit.registration.inspection import Inspection, inspect_unregistered
from ssdaudit.registration.plan import ProbeOptions, probe_plan
from ssdaudit.registration.rules.r008_device_move import moved_by_to
from ssdaudit.registration.tracer import ProbeResult, probe_forward

__all__ = ["Inspection", "ProbeResult", "find_unregistered", "inspect_unregistered", "moved_by_to", "probe_forward"]


def find_unregistered(model: nn.Module, example_input: Any = None, *, probe_device: str = "auto",
                      budget: int | None = None) -> list[Finding]:
    """Every module, parameter and tensor the model uses but does not register (rules R001-R006, R008, R011).

    ``probe_device``: for a model on the meta device whose forward probe fails there (``.item()``, a data-dependent
    shape, a kernel that wants another dtype), "auto" follows the plan (``plan.probe_plan``): the probe runs again
    on a CPU copy with placeholder weights (``placeholder.placeholder_copy``: shared memory, allocations bounded by
    ``budget`` bytes, None: half the memory available); "meta" never does. ``ssdaudit params``, ``ssdaudit check``
    and the pytest plugin go through the same plan.

    ``example_input``: handed to ``forward`` by ``core.forward_call`` (a tuple unpacked into positional arguments,
    a dict whose keys all name forward's parameters as keywords, anything else the single argument); ``None`` skips
    the forward probe (an N003 note says so). The probe runs in train and eval mode, and the device-move check
    (R008) asks which tensors it read ``.to()`` would leave behind. ``move_probe.find_device_strays`` is the same
    question answered by moving a copy to float64. Nothing here raises for a forward that fails: the walk's findings
    are returned with an N004 note (or, when an unregistered member sits on another device or dtype than the
    model, that member's finding names the failure). Raises ``UsageError`` for a bad ``probe_device``.
    """
    return list(probe_plan(model, example_input, ProbeOptions(probe_device, budget)).findings)
