"""R011: an ``nn.Parameter`` (or a fresh leaf with ``requires_grad=True``) that forward builds and then uses."""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ssdaudit.core.findings import RULES, Finding
from ssdaudit.registration.evidence import ParamsEvidence
from ssdaudit.registration.rules import Phase

CODE = "R011"
PHASE = Phase.PROBE
ORDER = 30


def check(evidence: ParamsEvidence, earlier: Sequence[Finding]) -> Iterator[Finding]:
    """A new weight every call, in no ``parameters()``, never trained nor saved. Parameters of modules built in
    forward are R005's; one that ends up registered on the model (lazy initialisation) is not reported here. One
    finding per place of creation (file:line), counting what one pass builds."""
    index, probe = evidence.index, evidence.trace
    if probe is None:
        return
    inside_created = {id(p) for m in probe.created for p in m.parameters()}
    registered = index.registered_parameters
    module_names = index.module_names
    places: dict[tuple[str | None, str], list[torch.Tensor]] = collections.defaultdict(list)
    for i, (tensor, location, module) in probe.made_params.items():
        if i in inside_created or i in registered or i not in probe.param_reads:
            continue
        places[(location, module_names.get(id(module)) or "<forward>")].append(tensor)
    for (location, owner), tensors in places.items():
        passes = max(1, len(probe.modes))
        per_pass = tensors[: max(1, len(tensors) // passes)]
        n = sum(t.numel() for t in per_pass)
        kind = "nn.Parameter" if isinstance(per_pass[0], nn.Parameter) else "tensor with requires_grad=True"
        shapes = ", ".join(str(tuple(t.shape)) for t in per_pass[:3])
        where = f" at {location}" if location else ""
        whose = "forward()" if owner == "<forward>" else f"`{owner}`'s forward()"
        yield RULES["R011"].finding(owner,
            f"{whose} builds {len(per_pass)} {kind}(s) {shapes} ({n:,} values){where} and uses it: a new "
            "weight on every call, in no parameters(), so no optimizer trains it and state_dict() does not save it",
            n, 0, location)
