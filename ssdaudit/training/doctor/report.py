"""``DoctorReport``: what ``ssdaudit watch`` and ``Watch.report()`` return (the ``Report`` protocol)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ssdaudit.core.findings import Finding
from ssdaudit.core.report import failing_findings


@dataclass
class DoctorReport:
    """The findings of a watched run. ``steps``: optimizer steps seen; ``first_step``: rule code -> the step
    (1-based) it was first reported at; ``internal_errors``: checks that failed (bugs of ours, never the user's);
    ``notes``: facts about the watch itself (in a distributed run, ranks that posted no evidence)."""

    target: str
    steps: int
    findings: list[Finding]
    first_step: dict[str, int] = field(default_factory=dict)
    internal_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # facts about the watch itself (ranks that sent no evidence)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "steps": self.steps,
            "findings": [{**f.to_dict(), "step": self.first_step.get(f.rule)} for f in self.findings],
            "internal_errors": [e.splitlines()[0] for e in self.internal_errors],
            "notes": list(self.notes),
        }

    def exit_code(self, strict: bool = False) -> int:
        """1 on an error finding (warnings too when ``strict``), else 0."""
        return 1 if failing_findings(self.findings, strict) else 0
