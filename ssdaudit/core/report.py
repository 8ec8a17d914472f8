"""The ``Report`` protocol: what every command's result offers the renderers and the exit-code policy.

A new report type is one class with these three members plus one terminal renderer registered with
``ssdaudit.render.text.render_text.register`` (in ``render.model_text`` when the report needs torch); JSON,
SARIF and GitHub annotations need nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from ssdaudit.core.findings import Finding, Severity


@runtime_checkable
class Report(Protocol):
    """A command's result: its findings (what SARIF and annotations show), a JSON form, and its exit code."""

    @property
    def findings(self) -> list[Finding]: ...

    def to_dict(self) -> dict[str, Any]: ...

    def exit_code(self, strict: bool = False) -> int:
        """0 clean, 1 findings that fail (warnings too when ``strict``); 2 only where the report itself records
        that something could not run (``ssdaudit check``'s load errors)."""
        ...


def failing_findings(findings: Iterable[Finding], strict: bool = False) -> list[Finding]:
    """The findings that fail a command: errors, and warnings too under ``--strict``. Notes never fail."""
    failing = {Severity.ERROR, Severity.WARNING} if strict else {Severity.ERROR}
    return [f for f in findings if f.severity in failing]
