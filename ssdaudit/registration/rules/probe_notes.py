"""N003 N004: what the audit could not check: no example input, or a forward that failed in a mode."""

from __future__ import annotations

from dataclasses import replace

from ssdaudit.core.findings import RULES, Finding, Severity
from ssdaudit.registration.modes import ProbeOutcome


def skipped_note() -> Finding:
    """N003: no example input, so no forward probe."""
    return RULES["N003"].finding("<forward>")


def failure_notes(outcome: ProbeOutcome, explained: bool) -> list[Finding]:
    if not outcome.failures:
        return []
    if outcome.result is not None:
        (mode, error), = outcome.failures.items()
        ran = outcome.result.modes[0]
        return [RULES["N004"].finding("<forward>", f"the probe ran in {ran} mode only: {mode} mode failed with {error}")]
    error = next(iter(outcome.failures.values()))
    severity = Severity.INFO if explained else Severity.WARNING
    because = " (explained by the unregistered members above)" if explained else ""
    return [RULES["N004"].finding("<forward>", f"forward fails on the example input in train and eval mode{because}: {error}; "
                                  "the checks that need a forward pass (R004, R005, R008) did not run", severity=severity)]


def with_meta_hint(findings: list[Finding], hint: str) -> list[Finding]:
    """The findings with every N004 note ending in "(on the meta device: HINT)": where the probe stayed on the meta
    device, the input is not the problem, and N004's generic fix would mislead. New findings; none is changed."""
    return [replace(f, message=f"{f.message} (on the meta device: {hint})") if f.rule == "N004" else f
            for f in findings]
