"""R001 R002 R003 R006 N006: modules and parameters the attribute walk found outside the registry.

One finding per attribute path: modules (R001 in a plain container, R003 in a plain object, closure or partial;
R006 when they hold no parameter but change with .eval()/.train(); N006 when frozen or run only under no_grad),
parameters (R002). A member that sits on another device or dtype than the model says so, with the probe's error.
"""

from __future__ import annotations

import collections
from typing import AbstractSet, Any

import torch
from torch import nn

from ssdaudit.core.findings import RULES, Finding, Severity
from ssdaudit.registration.model_index import ModelIndex
from ssdaudit.registration.source_text import assignment_location
from ssdaudit.registration.tracer import ProbeResult
from ssdaudit.registration.walk import Hit

_MODE_DEPENDENT = (
    nn.modules.dropout._DropoutNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.RReLU,
)



def is_mode_dependent(module: nn.Module) -> bool:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.weight is not None:
            continue  # has parameters: already an error for the parameters it loses
        if isinstance(m, _MODE_DEPENDENT) and (not isinstance(m, nn.modules.instancenorm._InstanceNorm) or m.track_running_stats):
            return True
    return False


def unregistered_params(objs: list[Any], registered: AbstractSet[int], counted: set[int]) -> int:
    total = 0
    for obj in objs:
        params = [obj] if isinstance(obj, torch.Tensor) else list(obj.parameters())
        for p in params:
            if id(p) not in registered and id(p) not in counted:
                counted.add(id(p))
                total += p.numel()
    return total


def describe(objs: list[Any]) -> str:
    kinds = collections.Counter(type(o).__name__ for o in objs)
    return ", ".join(f"{n} {k}" for k, n in kinds.most_common(3)) + (", ..." if len(kinds) > 3 else "")



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



def _read_by_forward(obj: Any, probe: ProbeResult | None) -> bool:
    """The probe saw forward read this tensor, or call this module (or one inside it). No probe: no evidence."""
    if probe is None:
        return False
    if isinstance(obj, torch.Tensor):
        return id(obj) in probe.used_tensors
    return any(id(m) in probe.called for m in obj.modules())



def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")



def _move_note(objs: list[Any], home: tuple[torch.device, torch.dtype] | None, failure: str | None) -> str:
    """" (.cuda() never moved it: ...; forward fails with: ...)" when these members sit elsewhere than the model."""
    if home is None:
        return ""
    tensors = [t for o in objs for t in ([o] if isinstance(o, torch.Tensor) else [*o.parameters(), *o.buffers()])]
    stray = [t for t in tensors if t.is_floating_point() and (t.device, t.dtype) != home]
    if not stray:
        return ""
    t = stray[0]
    moves = []
    if t.device != home[0]:
        moves.append(f".to({home[0].type!r})/.{home[0].type}()" if home[0].type in ("cuda", "cpu") else f".to({home[0].type!r})")
    if t.dtype != home[1]:
        moves.append(f".to({dtype_name(home[1])})")
    text = (f"; {' and '.join(moves)} never moved it: it is {dtype_name(t.dtype)} on {t.device} while the model is "
            f"{dtype_name(home[1])} on {home[0]}")
    return text + (f"; forward fails with: {failure}" if failure else "")



def container_findings(index: ModelIndex, probe: ProbeResult | None, failure: str | None,
                       counted: set[int]) -> list[Finding]:
    """The walk's findings, one per (attribute path, reached through a plain object or not). ``failure``: the
    probe's error when no mode ran (named where a member sits elsewhere than the model). ``counted``: ids of the
    parameters already counted in a finding (updated here: a parameter is counted once per audit)."""
    groups: dict[tuple[str, bool], list[Hit]] = collections.defaultdict(list)
    for hit in index.hits:
        if hit.torch_internal and not _read_by_forward(hit.obj, probe):
            continue  # torch's own bookkeeping that forward never reads: not the user's container
        groups[(hit.attr_path, hit.via_object or False)].append(hit)
    findings: list[Finding] = []
    for (path, via_object), hits in groups.items():
        modules = [h.obj for h in hits if isinstance(h.obj, nn.Module)]
        params_only = [h.obj for h in hits if isinstance(h.obj, torch.Tensor)]
        location = assignment_location(hits[0].owner, hits[0].attr)
        moved = _move_note(modules + params_only, index.home, failure)
        if modules:
            findings.append(_module_finding(path, via_object, hits, modules, location, moved, index, probe, counted))
        if params_only:
            n = unregistered_params(params_only, index.registered_tensors, counted)
            findings.append(RULES["R002"].finding(
                path, f"`{path}` holds {len(params_only)} nn.Parameter(s) with {n:,} values outside the registry" + moved,
                n, 0, location, {h.member_path: h.obj for h in hits if isinstance(h.obj, torch.Tensor)}))
    return findings


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


def explains_failure(index: ModelIndex, failure: str | None) -> bool:
    """Whether an unregistered member sits elsewhere than the model (so it explains a forward that fails)."""
    return any(_move_note([h.obj], index.home, failure) for h in index.hits)
