"""N001: one parameter registered under several names (tied weights): a note, so it is counted once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ssdaudit.core.findings import RULES, Finding
from ssdaudit.registration.evidence import ParamsEvidence
from ssdaudit.registration.rules import Phase

CODE = "N001"
PHASE = Phase.AUDIT
ORDER = 70


def check(evidence: ParamsEvidence, earlier: Sequence[Finding]) -> Iterator[Finding]:
    """One note per shared parameter, at its first name, listing the other names; its values counted once."""
    model = evidence.index.model
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    for aliases in names.values():
        if len(aliases) > 1:
            p = model.get_parameter(aliases[0])
            yield RULES["N001"].finding(aliases[0], None, p.numel(), values={"aliases": ", ".join(aliases[1:])})
