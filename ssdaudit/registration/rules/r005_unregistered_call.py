"""R005: modules that forward builds, or calls without any attribute reaching them."""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn

from ssdaudit.core.findings import RULES, Finding, Severity
from ssdaudit.registration.evidence import ParamsEvidence
from ssdaudit.registration.rules import Phase
from ssdaudit.registration.rules._members import describe, is_mode_dependent, unregistered_params, walk_counted
from ssdaudit.registration.tracer import ProbeResult

CODE = "R005"
PHASE = Phase.PROBE
ORDER = 30


def check(evidence: ParamsEvidence, earlier: Sequence[Finding]) -> Iterator[Finding]:
    """One finding per (registered-as path, place of creation): modules the probe saw run that the registry and
    the walk do not reach, or that forward registered only then. Parameters the walk's findings count are not
    counted again."""
    index, probe = evidence.index, evidence.trace
    if probe is None:
        return
    counted = walk_counted(index, probe)
    for (path, location), modules in _strays_by_place(index.registered_modules, index.hits, probe).items():
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
        yield RULES["R005"].finding(path, message, n, len(modules), location,
                                    {f"{path}.{i}": m for i, m in enumerate(modules)}, severity=severity)


def _strays_by_place(registered: frozenset[int], hits: Sequence[Any], probe: ProbeResult) \
        -> dict[tuple[str, str | None], list[nn.Module]]:
    """The outermost modules that ran but that neither the registry nor the walk reaches (or that forward
    registered), by (the path forward registered them at or "<forward>", file:line where built); a module built
    anew by each probe pass counts once (what one pass builds)."""
    known = set(registered)
    for hit in hits:
        if isinstance(hit.obj, nn.Module):
            known.update(id(m) for m in hit.obj.modules())
    added_ids = {id(m): name for name, m in probe.added}
    strays = {i: m for i, m in probe.called.items() if i not in known or i in added_ids}
    nested = {id(sub) for m in strays.values() for sub in m.modules() if sub is not m}
    by_place: dict[tuple[str, str | None], list[nn.Module]] = collections.defaultdict(list)
    built: set[tuple[Any, ...]] = set()
    for m in (m for i, m in strays.items() if i not in nested):
        path, location = added_ids.get(id(m), "<forward>"), probe.created_at.get(id(m))
        if location is not None:  # built anew by each probe pass: count what one pass builds
            kind = (path, location, type(m), tuple(tuple(p.shape) for p in m.parameters()))
            if kind in built:
                continue
            built.add(kind)
        by_place[(path, location)].append(m)
    return by_place
