"""N004: a forward probe that failed in a mode (the other ran), or in both (the checks that need a pass did not run).

Also ``with_meta_hint``: where the plan leaves the probe on the meta device, the N004 note says how to probe
elsewhere (the plan's, ``plan.probe_plan``). The round trip's N004 notes are R007's (``r007_reload_mismatch``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from ssdaudit.core.findings import RULES, Finding, Severity
from ssdaudit.registration.evidence import ParamsEvidence
from ssdaudit.registration.rules import Phase
from ssdaudit.registration.rules._members import explains_failure

CODE = "N004"
PHASE = Phase.PROBE
ORDER = 20


def check(evidence: ParamsEvidence, earlier: Sequence[Finding]) -> Iterator[Finding]:
    """One note when a mode failed: the mode that ran and the other's error, or the error of both (a warning,
    unless an unregistered member on another device or dtype than the model explains it)."""
    status = evidence.status
    if not status.failures:
        return
    if status.ran:
        (mode, error), = status.failures
        yield RULES["N004"].finding("<forward>", f"the probe ran in {status.modes[0]} mode only: {mode} mode failed "
                                    f"with {error}")
        return
    error = status.failures[0][1]
    explained = explains_failure(evidence.index, error)
    severity = Severity.INFO if explained else Severity.WARNING
    because = " (explained by the unregistered members above)" if explained else ""
    yield RULES["N004"].finding("<forward>", f"forward fails on the example input in train and eval mode{because}: "
                                f"{error}; the checks that need a forward pass (R004, R005, R008) did not run",
                                severity=severity)


def with_meta_hint(findings: list[Finding], hint: str) -> list[Finding]:
    """The findings with every N004 note ending in "(on the meta device: HINT)": where the probe stayed on the meta
    device, the input is not the problem, and N004's generic fix would mislead. New findings; none is changed."""
    return [replace(f, message=f"{f.message} (on the meta device: {hint})") if f.rule == "N004" else f
            for f in findings]
