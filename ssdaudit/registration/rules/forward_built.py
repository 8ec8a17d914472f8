"""R005 R011: modules and parameters that forward builds (or calls without any attribute reaching them)."""

from __future__ import annotations

import collections
from typing import Any

import torch
from torch import nn

from ssdaudit.core.findings import RULES, Finding, Severity
from ssdaudit.registration.model_index import ModelIndex
from ssdaudit.registration.rules.containers import describe, is_mode_dependent, unregistered_params
from ssdaudit.registration.tracer import ProbeResult


def parameter_findings(index: ModelIndex, probe: ProbeResult) -> list[Finding]:
    """R011: an ``nn.Parameter`` (or a fresh leaf with ``requires_grad=True``) that forward built and then used: a
    new weight every call, in no ``parameters()``, never trained nor saved. Parameters of modules built in forward
    are R005's; one that ends up registered on the model (lazy initialisation) is not reported here. One finding
    per place of creation (file:line), counting what one pass builds."""
    inside_created = {id(p) for m in probe.created for p in m.parameters()}
    registered = index.registered_parameters
    module_names = index.module_names
    places: dict[tuple[str | None, str], list[torch.Tensor]] = collections.defaultdict(list)
    for i, (tensor, location, module) in probe.made_params.items():
        if i in inside_created or i in registered or i not in probe.param_reads:
            continue
        places[(location, module_names.get(id(module)) or "<forward>")].append(tensor)
    findings = []
    for (location, owner), tensors in places.items():
        passes = max(1, len(probe.modes))
        per_pass = tensors[: max(1, len(tensors) // passes)]
        n = sum(t.numel() for t in per_pass)
        kind = "nn.Parameter" if isinstance(per_pass[0], nn.Parameter) else "tensor with requires_grad=True"
        shapes = ", ".join(str(tuple(t.shape)) for t in per_pass[:3])
        where = f" at {location}" if location else ""
        whose = "forward()" if owner == "<forward>" else f"`{owner}`'s forward()"
        findings.append(RULES["R011"].finding(owner,
            f"{whose} builds {len(per_pass)} {kind}(s) {shapes} ({n:,} values){where} and uses it: a new "
            "weight on every call, in no parameters(), so no optimizer trains it and state_dict() does not save it",
            n, 0, location))
    return findings


def module_findings(index: ModelIndex, probe: ProbeResult, counted: set[int]) -> list[Finding]:
    known = set(index.registered_modules)
    for hit in index.hits:
        if isinstance(hit.obj, nn.Module):
            known.update(id(m) for m in hit.obj.modules())
    added_ids = {id(m): name for name, m in probe.added}
    strays = {i: m for i, m in probe.called.items() if i not in known or i in added_ids}
    nested = {id(sub) for m in strays.values() for sub in m.modules() if sub is not m}
    roots = [m for i, m in strays.items() if i not in nested]
    by_place: dict[tuple[str, str | None], list[nn.Module]] = collections.defaultdict(list)
    built: set[tuple[Any, ...]] = set()
    for m in roots:
        path, location = added_ids.get(id(m), "<forward>"), probe.created_at.get(id(m))
        if location is not None:  # built anew by each probe pass: count what one pass builds
            kind = (path, location, type(m), tuple(tuple(p.shape) for p in m.parameters()))
            if kind in built:
                continue
            built.add(kind)
        by_place[(path, location)].append(m)
    findings = []
    for (path, location), modules in by_place.items():
        # parameters the model registered before the pass are not hidden by a module forward builds around them
        # (a wrapper swapped in that reuses the old projections, as Hugging Face's set_attention_type does)
        n = unregistered_params(modules, index.registered_tensors, counted)
        created = location is not None
        where = "built inside forward()" if created else "called in forward() but reachable from no attribute"
        if path != "<forward>":
            where += f" and registered as `{path}` only then (after the optimizer was built)"
        # one registered during the pass is reached by .eval()/.train() from then on: only new parameters matter
        hidden_mode = path == "<forward>" and any(is_mode_dependent(m) for m in modules)
        severity = Severity.ERROR if n or hidden_mode else Severity.INFO
        message = f"{describe(modules)} with {n:,} parameters {where}"
        findings.append(RULES["R005"].finding(path, message, n, len(modules), location,
                                              {f"{path}.{i}": m for i, m in enumerate(modules)}, severity=severity))
    return findings
