"""``DoctorReport``: what ``ssdaudit watch`` and ``Watch.report()`` return (the ``Report`` protocol)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ssdaudit.core.diagnosis import fold, headline, ordered
from ssdaudit.core.findings import Finding
from ssdaudit.core.report import failing_findings
from ssdaudit.training.doctor.series import RunSeries


@dataclass
class DoctorReport:
    """The findings of a watched run, cause first: each root cause followed by its consequences (``caused_by``, see
    ``ssdaudit.core.diagnosis``). ``steps``: optimizer steps seen; ``first_step``: rule code -> the step (1-based)
    it was first reported at; ``internal_errors``: checks that failed (bugs of ours, never the user's); ``notes``:
    facts about the watch itself (in a distributed run, ranks that posted no evidence); ``series``: the run in
    numbers, one per watched optimizer; ``plot``: the picture written (``--plot``)."""

    target: str
    steps: int
    findings: list[Finding]
    first_step: dict[str, int] = field(default_factory=dict)
    internal_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # facts about the watch itself (ranks that sent no evidence)
    series: list[RunSeries] = field(default_factory=list)
    plot: str | None = None

    def __post_init__(self) -> None:
        self.findings = ordered(fold(self.findings))

    @property
    def summary(self) -> str:
        """``2 causes found: T006 at main.py:348, step 2; ...`` ("" when clean)."""
        return headline(self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "steps": self.steps,
            "summary": self.summary,
            "findings": [{**f.to_dict(), "step": f.step, "caused_by": f.caused_by} for f in self.findings],
            "internal_errors": [e.splitlines()[0] for e in self.internal_errors],
            "series": [s.to_dict() for s in self.series],
            **({"plot": self.plot} if self.plot is not None else {}),
            "notes": list(self.notes),
        }

    def exit_code(self, strict: bool = False) -> int:
        """1 on an error finding (warnings too when ``strict``), else 0. A consequence counts as any finding does:
        the exit code does not depend on how the findings are grouped."""
        return 1 if failing_findings(self.findings, strict) else 0
