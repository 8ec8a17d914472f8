"""One inspection of a model where it is: the evidence (model index, forward trace, probe status), then the rules.

The walk (``model_index``) starts at every registered module's ``__dict__`` and follows plain containers, plain
objects, closures and ``functools.partial`` to any depth, recording modules and parameters that
``model.modules()`` / ``model.parameters()`` do not reach. The probe (``modes``, ``tracer``) runs forward in train
and eval mode with global module hooks to catch modules that run but are not part of the model (built inside
``forward()``, or hidden where no attribute reaches), and records which tensors forward reads (for R004, R008).
The rules of the probe phase in ``registration.rules`` (one module per code, discovered) judge that evidence.
Where the probe runs, and what happens when it fails on the meta device, is the plan's (``plan.probe_plan``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from ssdaudit.core.findings import Finding
from ssdaudit.registration.evidence import ParamsEvidence, ProbeStatus
from ssdaudit.registration.model_index import ModelIndex
from ssdaudit.registration.modes import probe_modes, probe_status
from ssdaudit.registration.rules import Phase, judge

if TYPE_CHECKING:
    from ssdaudit.registration.move_probe import MoveProbeResult


@dataclass(frozen=True)
class Inspection:
    """The unregistered-member findings of one probe of one model, the probe's status (where it ran, which modes
    ran, why one failed), and the model index the rules judged (the walk, reused by the rest of the audit)."""

    findings: tuple[Finding, ...]
    status: ProbeStatus
    index: ModelIndex


def inspect_unregistered(model: nn.Module, example_input: Any = None, device: str | None = None) -> Inspection:
    """The walk, the forward probe where the model is (no fallback), the dtype-move probe, and the rules of the
    probe phase (``registration.rules``) on that evidence.

    ``device``: what the status records as the probe's place ("placeholder" for a placeholder copy); None: the
    device type of the model's parameters ("meta", "cpu", ...). Raises nothing for a forward that fails (an N004
    note and the status say so)."""
    index = ModelIndex.of(model)
    outcome = probe_modes(model, example_input, index.hidden_modules) if example_input is not None else None
    where = device or next((t.device.type for t in model.parameters()), "cpu")
    trace = outcome.result if outcome is not None else None
    moves = dtype_move_probe(model, example_input) if trace is not None else None
    evidence = ParamsEvidence(index, probe_status(outcome, where), trace, moves)
    return Inspection(tuple(judge(Phase.PROBE, evidence)), evidence.status, index)


def dtype_move_probe(model: nn.Module, example_input: Any) -> "MoveProbeResult":
    """The dtype-move probe (``move_probe.find_device_strays``) on the input's first sample: run for every model,
    since a move inside forward that follows only the input's device is as invisible to ``.to()`` as a custom
    ``_apply``. It records reads of tensors in the wrong dtype, never waiting for an op to fail."""
    from ssdaudit.registration.move_probe import find_device_strays, first_sample

    return find_device_strays(model, first_sample(example_input))
