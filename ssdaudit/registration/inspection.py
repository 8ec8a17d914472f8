"""One inspection of a model where it is: the evidence (model index, forward trace, probe status), then the rules.

The walk (``model_index``) starts at every registered module's ``__dict__`` and follows plain containers, plain
objects, closures and ``functools.partial`` to any depth, recording modules and parameters that
``model.modules()`` / ``model.parameters()`` do not reach. The probe (``modes``, ``tracer``) runs forward in train
and eval mode with global module hooks to catch modules that run but are not part of the model (built inside
``forward()``, or hidden where no attribute reaches), and records which tensors forward reads (for R004, R008).
The rules in ``registration.rules`` judge that evidence. Where the probe runs, and what happens when it fails on
the meta device, is the plan's (``plan.probe_plan``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ssdaudit.core.findings import Finding
from ssdaudit.registration.evidence import ProbeStatus
from ssdaudit.registration.model_index import ModelIndex
from ssdaudit.registration.modes import probe_modes, probe_status
from ssdaudit.registration.rules.containers import container_findings, explains_failure
from ssdaudit.registration.rules.device_move import device_move_findings, dtype_move_probe
from ssdaudit.registration.rules.forward_built import module_findings, parameter_findings
from ssdaudit.registration.rules.probe_notes import failure_notes, skipped_note
from ssdaudit.registration.rules.tensors import tensor_attr_findings

@dataclass(frozen=True)
class Inspection:
    """The unregistered-member findings of one probe of one model, and the probe's status (where it ran, which
    modes ran, why one failed)."""

    findings: tuple[Finding, ...]
    status: ProbeStatus


def inspect_unregistered(model: nn.Module, example_input: Any = None, device: str | None = None) -> Inspection:
    """The walk, the forward probe where the model is (no fallback), and the rules on that evidence.

    ``device``: what the status records as the probe's place ("placeholder" for a placeholder copy); None: the
    device type of the model's parameters ("meta", "cpu", ...). Raises nothing for a forward that fails (an N004 note and the
    status say so)."""
    index = ModelIndex.of(model)
    counted: set[int] = set()
    outcome = probe_modes(model, example_input, index.hidden_modules) if example_input is not None else None
    where = device or next((t.device.type for t in model.parameters()), "cpu")
    status = probe_status(outcome, where)
    probe = outcome.result if outcome is not None else None
    failure = status.failure if outcome is not None and probe is None else None
    findings = container_findings(index, probe, failure, counted)
    if outcome is None:
        findings.append(skipped_note())
    else:
        findings.extend(failure_notes(outcome, explained=explains_failure(index, failure)))
        if probe is not None:
            findings.extend(module_findings(index, probe, counted))
            findings.extend(parameter_findings(index, probe))
    moves = dtype_move_probe(model, example_input) if probe is not None else None
    findings.extend(tensor_attr_findings(index, probe, moves))
    if probe is not None:
        findings.extend(device_move_findings(index, probe, findings, moves))
    return Inspection(tuple(findings), status)


