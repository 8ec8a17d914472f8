"""N002: registered parameters that do not require gradients (frozen): a note with their count and where."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ssdaudit.core.findings import RULES, Finding
from ssdaudit.registration.evidence import ParamsEvidence
from ssdaudit.registration.rules import Phase

CODE = "N002"
PHASE = Phase.AUDIT
ORDER = 70


def check(evidence: ParamsEvidence, earlier: Sequence[Finding]) -> Iterator[Finding]:
    """One note for all frozen parameters of the model: how many tensors and values, under which top-level paths
    (the first five)."""
    frozen = [(n, p) for n, p in evidence.index.model.named_parameters() if not p.requires_grad]
    if frozen:
        total = sum(p.numel() for _, p in frozen)
        prefixes = sorted({n.split(".")[0] for n, _ in frozen})
        yield RULES["N002"].finding(", ".join(prefixes[:5]), None, total,
                                    values={"tensors": len(frozen), "params": total, "prefixes": ", ".join(prefixes[:5])})
