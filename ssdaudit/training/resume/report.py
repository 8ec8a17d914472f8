"""``ResumeReport``: what ``ssdaudit resume`` returns (the ``Report`` protocol)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ssdaudit.core.findings import Finding
from ssdaudit.core.report import failing_findings


@dataclass
class ResumeReport:
    """The comparison of a run and the same run resumed from its checkpoint. ``saved_step``: optimizer steps done
    when the checkpoint was saved; ``compared``: the steps aligned; ``diverged_at``: the resumed run's first
    differing step (None: they match); ``max_abs_diff``/``rel_diff``: how far apart the parameters end (max |a-b|,
    ||a-b|| / ||a||) after ``compared`` steps; ``tolerance``: the comparison (``exact`` on CPU)."""

    target: str
    resume_command: str
    at: int
    steps: int
    saved_step: int
    checkpoint: str
    saved_at: str | None
    compared: int
    resumed_steps: int
    diverged_at: int | None
    fields: list[str]
    max_abs_diff: float | None
    rel_diff: float | None
    findings: list[Finding]
    tolerance: str = "exact"
    notes: list[str] = field(default_factory=list)
    internal_errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "resume_command": self.resume_command, "at": self.at, "steps": self.steps,
            "saved_step": self.saved_step, "checkpoint": self.checkpoint, "saved_at": self.saved_at,
            "compared": self.compared, "resumed_steps": self.resumed_steps, "match": self.diverged_at is None,
            "diverged_at": self.diverged_at, "differing": self.fields, "max_abs_diff": self.max_abs_diff,
            "rel_diff": self.rel_diff, "tolerance": self.tolerance, "notes": self.notes,
            "findings": [{**f.to_dict(), "step": self.diverged_at} for f in self.findings],
            "internal_errors": [e.splitlines()[0] for e in self.internal_errors],
        }

    def exit_code(self, strict: bool = False) -> int:
        """1 when the resumed run diverged or an error finding was made (warnings too when ``strict``), else 0."""
        return 1 if self.diverged_at is not None or failing_findings(self.findings, strict) else 0
