"""N003: no example input, so no forward probe: the checks that need a pass did not run."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ssdaudit.core.findings import RULES, Finding
from ssdaudit.registration.evidence import ParamsEvidence
from ssdaudit.registration.rules import Phase

CODE = "N003"
PHASE = Phase.PROBE
ORDER = 20


def check(evidence: ParamsEvidence, earlier: Sequence[Finding]) -> Iterator[Finding]:
    if not evidence.status.attempted:
        yield RULES["N003"].finding("<forward>")
