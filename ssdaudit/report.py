"""Renderers for reports: a rich terminal view and JSON. Library code returns data; this prints it."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .findings import RULES, Severity

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "dim"}


def _mb(n: int) -> str:
    return f"{n:,} bytes ({n / 1e6:.1f} MB)"


def render_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2)


def render_params_text(report, console: Console, show_notes: bool = True) -> None:
    """The terminal view of a ParamsReport: groups (with the reference beside them), findings, summary."""
    table = Table(title=f"Registered parameters: {report.target}", title_justify="left")
    table.add_column("module")
    table.add_column("params", justify="right")
    ref = report.reference
    if ref is not None:
        table.add_column(f"reference ({ref.name})", justify="right")
        table.add_column("difference", justify="right")
        for row in ref.groups:
            diff = row["difference"]
            table.add_row(row["path"], f"{row['target']:,}", f"{row['params']:,}", f"[red]{diff:+,}[/]" if diff else "0")
        table.add_row("[bold]total[/]", f"[bold]{report.registered_params:,}[/]", f"[bold]{ref.params:,}[/]", f"{ref.difference:+,}")
    else:
        for g in report.groups:
            table.add_row(g.path, f"{g.params:,}")
        table.add_row("[bold]total[/]", f"[bold]{report.registered_params:,}[/]")
    console.print(table)
    render_findings_text(report.findings, console, show_notes)
    if ref is not None:
        for line in ref.explanation:
            console.print(f"reference: {line}")
    console.print()
    console.print(f"registered          {report.registered_params:>14,}")
    console.print(f"trainable           {report.trainable_params:>14,}")
    console.print(f"unregistered in use {report.unregistered_params:>14,}")
    console.print(f"effective total     {report.effective_params:>14,}")
    approx = "" if report.bytes_exact else " (estimated: meta device)"
    console.print(f"checkpoint          {_mb(report.checkpoint_bytes)}{approx}")
    if report.checkpoint_bytes_if_fixed != report.checkpoint_bytes:
        console.print(f"checkpoint if fixed {_mb(report.checkpoint_bytes_if_fixed)}")
    c = report.checkpoint
    if c is not None:
        console.print(f"file {c.path}: {_mb(c.file_bytes)} on disk, {_mb(c.predicted_bytes)} predicted for this model")
        if c.missing_keys:
            console.print(f"  [red]the file lacks {len(c.missing_keys)} of the model's tensors[/], e.g. {', '.join(c.missing_keys[:3])}")
        if c.unexpected_keys:
            console.print(f"  the file has {len(c.unexpected_keys)} tensors the model lacks, e.g. {', '.join(c.unexpected_keys[:3])}")
        if c.shape_mismatch:
            console.print(f"  [red]{len(c.shape_mismatch)} tensors differ in shape[/], e.g. {', '.join(c.shape_mismatch[:3])}")


def render_findings_text(findings, console: Console, show_notes: bool = True) -> None:
    shown = [f for f in findings if show_notes or f.severity is not Severity.INFO]
    if not shown:
        console.print("[green]no findings[/]")
        return
    for f in shown:
        where = f" ({f.location})" if f.location else ""
        console.print(f"[{_STYLE[f.severity]}]{f.rule} {f.name}[/] ({f.severity.value}) {escape(f.path)}{escape(where)}")
        console.print(f"    {escape(f.message)}")
        if f.severity is not Severity.INFO:
            console.print(f"    fix: {escape(f.fix)}")
            console.print(f"    why: {RULES[f.rule].why}", style="dim")
