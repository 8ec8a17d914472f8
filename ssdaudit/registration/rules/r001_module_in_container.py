"""R001 R002 R003 R006 N006: modules and parameters the attribute walk found outside the registry.

One finding per attribute path: modules (R001 in a plain container, R003 in a plain object, closure or partial;
R006 when they hold no parameter but change with .eval()/.train(); N006 when frozen or run only under no_grad),
parameters (R002). One detector, several codes: which applies is decided by the same evidence. A member that sits
on another device or dtype than the model says so, with the probe's error.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ssdaudit.core.findings import RULES, Finding, Severity
from ssdaudit.registration.evidence import ParamsEvidence
from ssdaudit.registration.model_index import ModelIndex
from ssdaudit.registration.rules import Phase
from ssdaudit.registration.rules._members import (describe, is_mode_dependent, move_note, unregistered_params,
                                                  walk_hits)
from ssdaudit.registration.source_text import assignment_location
from ssdaudit.registration.tracer import ProbeResult
from ssdaudit.registration.walk import Hit

CODE = "R001"
ALSO = ("R002", "R003", "R006", "N006")
PHASE = Phase.PROBE
ORDER = 10


def check(evidence: ParamsEvidence, earlier: Sequence[Finding]) -> Iterator[Finding]:
    """The walk's findings, one per (attribute path, reached through a plain object or not). Where no mode of
    the probe ran, its error is named where a member sits elsewhere than the model. Each parameter is counted in
    one finding only."""
    index, probe, status = evidence.index, evidence.trace, evidence.status
    failure = status.failure if status.attempted and not status.ran else None
    counted: set[int] = set()
    groups: dict[tuple[str, bool], list[Hit]] = collections.defaultdict(list)
    for hit in walk_hits(index, probe):  # torch's own bookkeeping that forward never reads is not a user container
        groups[(hit.attr_path, hit.via_object or False)].append(hit)
    for (path, via_object), hits in groups.items():
        modules = [h.obj for h in hits if isinstance(h.obj, nn.Module)]
        params_only = [h.obj for h in hits if isinstance(h.obj, torch.Tensor)]
        location = assignment_location(hits[0].owner, hits[0].attr)
        moved = move_note(modules + params_only, index.home, failure)
        if modules:
            yield _module_finding(path, via_object, hits, modules, location, moved, index, probe, counted)
        if params_only:
            n = unregistered_params(params_only, index.registered_tensors, counted)
            yield RULES["R002"].finding(
                path, f"`{path}` holds {len(params_only)} nn.Parameter(s) with {n:,} values outside the registry" + moved,
                n, 0, location, {h.member_path: h.obj for h in hits if isinstance(h.obj, torch.Tensor)})


def _module_finding(path: str, via_object: bool, hits: list[Hit], modules: list[nn.Module], location: str | None,
                    moved: str, index: ModelIndex, probe: ProbeResult | None, counted: set[int]) -> Finding:
    """R001/R003 (R006, N006) for the modules at one attribute path."""
    n = unregistered_params(modules, index.registered_tensors, counted)
    container = "a plain object, closure or partial" if via_object else f"a plain {type(_attr_value(hits[0])).__name__}"
    severity = Severity.ERROR if n else Severity.INFO
    if n == 0 and any(is_mode_dependent(m) for m in modules):
        rule, severity = "R006", Severity.ERROR
        message = f"`{path}` holds {describe(modules)} in {container}: .eval()/.train() never reach them"
    elif n and _intentionally_hidden(modules, probe):
        rule, severity = "N006", Severity.INFO
        message = (
            f"`{path}` holds {len(modules)} frozen module(s) ({describe(modules)}, {n:,} parameters) in {container}, "
            "kept out of the registry (on purpose?): .to(), .eval() and state_dict() miss them"
        )
    else:
        rule = "R003" if via_object else "R001"
        message = (
            f"`{path}` holds {len(modules)} module(s) ({describe(modules)}) with {n:,} parameters in {container}: "
            "not in parameters(), state_dict() or .to()"
        )
    return RULES[rule].finding(path, message + moved, n, len(modules), location,
                               {h.member_path: h.obj for h in hits if isinstance(h.obj, nn.Module)}, severity=severity)


def _attr_value(hit: Hit) -> Any:
    return vars(hit.owner).get(hit.attr)


def _intentionally_hidden(modules: list[nn.Module], probe: ProbeResult | None) -> bool:
    """Frozen (no trainable parameter), or run by forward only while autograd was off (a teacher under no_grad)."""
    params = [p for m in modules for p in m.parameters()]
    if params and not any(p.requires_grad for p in params):
        return True
    if probe is None or not probe.grad_observed or "train" not in probe.modes:
        return False
    ids = [id(m) for mod in modules for m in mod.modules()]
    called = [i for i in ids if i in probe.called]
    return bool(called) and not any(i in probe.with_grad for i in called)
