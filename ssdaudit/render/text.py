"""The terminal view of every report (rich): one renderer per report type, dispatched on the type.

The reports of the torch-free commands (lint, check) render here; those that need torch (params, diff, gradflow,
watch) register from ``render.model_text``. ``render.terminal.render`` is the entry point that loads that module
only when a report needs it, so ``ssdaudit lint`` renders without torch installed.
"""

from __future__ import annotations

import functools
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ssdaudit.core.findings import RULES, Finding, Severity
from ssdaudit.core.report import Report
from ssdaudit.gate.check import CheckReport
from ssdaudit.lint.engine import LintResult

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "dim"}


@functools.singledispatch
def render_text(report: Report, console: Console, **options: Any) -> None:
    """The terminal view of a report, dispatched on its type: a new report type registers one renderer here
    (``@render_text.register``); an unregistered one is a programming error, named."""
    raise TypeError(f"no terminal renderer registered for {type(report).__name__} "
                    "(ssdaudit.render.terminal.render loads them all)")


def render_findings_text(findings: list[Finding], console: Console, show_notes: bool = True) -> None:
    shown = [f for f in findings if show_notes or f.severity is not Severity.INFO]
    if not shown:
        console.print("[green]no findings[/]")
        return
    for f in shown:
        where = f" ({f.location})" if f.location else ""
        console.print(f"[{_STYLE[f.severity]}]{f.rule} {f.name}[/] ({f.severity.value}) {escape(f.label)}{escape(where)}")
        console.print(f"    {escape(f.message)}")
        if f.severity is not Severity.INFO:
            console.print(f"    fix: {escape(f.fix)}")
            console.print(f"    why: {RULES[f.rule].why}", style="dim")


@render_text.register
def render_lint_text(result: LintResult, console: Console) -> None:
    for f in result.findings:
        mark = "" if f.autofix is None else " [*]" if f.autofix.safe else " [unsafe fix]"
        console.print(f"{escape(str(f.location or ''))}: [{_STYLE[f.severity]}]{f.rule}[/]{escape(mark)} {escape(f.message)}")
    for e in result.errors:
        console.print(f"[yellow]{escape(e)}[/]")
    for line in result.applied:  # what each fix did: the container chosen, persistent or not
        console.print(f"fixed {escape(line)}")
    n = len(result.findings)
    summary = f"{n} finding{'s' if n != 1 else ''} in {result.files} file{'s' if result.files != 1 else ''}"
    if result.suppressed:
        summary += f" ({result.suppressed} suppressed by '# noqa' / '# ssdaudit: ignore')"
    if result.fixed:
        summary += f"; {result.fixed} fixed in {len(result.changed)} file{'s' if len(result.changed) != 1 else ''}"
    safe = sum(f.autofix is not None and f.autofix.safe for f in result.findings)
    if safe:
        summary += f"; {safe} fixable with --fix ([*])"
    console.print(("[green]" if n == 0 else "[red]") + summary + "[/]")


@render_text.register
def render_check_text(report: CheckReport, console: Console) -> None:
    """One table: each step, its status and what it found; then the findings that fail the gate."""
    colour = {"ok": "green", "expected failure": "green", "failed": "red", "unexpected pass": "red", "error": "red"}
    table = Table(title="ssdaudit check", title_justify="left")
    table.add_column("step")
    table.add_column("status")
    table.add_column("details")
    for row in report.rows:
        errors = sum(f.severity is Severity.ERROR for f in row.findings)
        details = list(row.details) + ([f"{errors} error findings"] if errors else [])
        table.add_row(escape(row.name), f"[{colour[row.status]}]{row.status}[/]", escape("; ".join(details)))
    console.print(table)
    for f in report.new:
        where = f"{f.location}: " if f.location else ""
        console.print(f"{escape(where)}[{_STYLE[f.severity]}]{f.rule}[/] {escape(f.label)}: {escape(f.message)}")
    if report.known:
        console.print(f"{len(report.known)} known findings (in the baseline) not failing the gate")
    console.print("[green]check passed[/]" if report.ok else "[red]check failed[/]")
