"""The terminal view of every report (rich): one renderer per report type, dispatched on the type."""

from __future__ import annotations

import functools
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ssdaudit.checkpoints.diff import DiffReport
from ssdaudit.core.findings import RULES, Finding, Severity
from ssdaudit.core.report import Report
from ssdaudit.gate.check import CheckReport
from ssdaudit.lint.engine import LintResult
from ssdaudit.registration.params import ParamsReport
from ssdaudit.training.gradflow import GradflowReport, GradFlowRun, LayerStats

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "dim"}


@functools.singledispatch
def render_text(report: Report, console: Console, **options: Any) -> None:
    """The terminal view of a report, dispatched on its type: a new report type registers one renderer here
    (``@render_text.register``); an unregistered one is a programming error, named."""
    raise TypeError(f"no terminal renderer registered for {type(report).__name__}")


def _mb(n: int) -> str:
    return f"{n:,} bytes ({n / 1e6:.1f} MB)"


@render_text.register
def render_params_text(report: ParamsReport, console: Console, show_notes: bool = True) -> None:
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
    if report.layers is not None:
        render_layers_text(report.layers, console)
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


def render_layers_text(rows: list[Any], console: Console) -> None:
    """torchinfo's table with the unregistered members in red: the count torchinfo alone never shows."""
    table = Table(title="Layers (torchinfo, with what it cannot see)", title_justify="left")
    for col in ("layer", "type", "output shape", "params"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for r in rows:
        name = "  " * r.depth + (r.path or "(model)")
        shape = "x".join(map(str, r.output_shape)) if r.output_shape else "-"
        style = "red" if r.unregistered else None
        table.add_row(escape(name), escape(r.kind), shape, f"{r.params:,}", style=style)
    console.print(table)


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


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


@render_text.register
def render_diff_text(report: DiffReport, console: Console, top: int = 10) -> None:
    """The terminal view of a DiffReport: the two files, key differences, changed tensors, unchanged groups."""
    from ssdaudit.checkpoints.diff import prefix_of

    table = Table(title="Checkpoints", title_justify="left")
    for col in ("", "path", "file bytes", "tensor bytes", "tensors", "params", "under key"):
        numeric = "bytes" in col or col in ("tensors", "params")
        table.add_column(col, justify="right" if numeric else "left", overflow="fold", no_wrap=numeric)
    for name, c in (("A", report.a), ("B", report.b)):  # the two opened checkpoints
        table.add_row(name, escape(str(c.path)), f"{c.file_bytes:,}", f"{c.tensor_bytes:,}", f"{len(c.tensors):,}",
                      f"{c.params:,}", c.wrapper_key or "(top level)")
    console.print(table)
    m = report.mapping
    if m is not None and m.renamed:
        counts = ", ".join(f"{n} by {how}" for how, n in m.counts().items())
        console.print(f"key mapping (--map auto): {len(m.pairs)} of A's keys paired ({counts}), confidence {m.confidence:.2f}")
        for ka, kb in list(m.renamed.items())[:top]:
            how = escape(f"[{m.method[ka]}{', ambiguous' if ka in m.ambiguous else ''}]")
            console.print(f"    {escape(kb)}  ->  {escape(ka)}  {how}")
        if len(m.renamed) > top:
            console.print(f"    ... {len(m.renamed) - top} more (--format json lists all)")
    if report.changed:
        t = Table(title=f"Changed tensors (largest relative change first, top {top} of {len(report.changed)})", title_justify="left")
        t.add_column("key")
        t.add_column("max |a-b|", justify="right")
        t.add_column("relative L2 change", justify="right")
        for row in sorted(report.changed, key=lambda r: -r["rel_change"])[:top]:
            t.add_row(escape(row["key"]), f"{row['max_abs_diff']:.3g}", f"{row['rel_change']:.3g}")
        console.print(t)
    groups: dict[str, list[int]] = {}
    for k in report.unchanged:
        g = groups.setdefault(prefix_of(k), [0, 0])
        g[0] += 1
        g[1] += report.a.tensors[k].numel
    if groups and (report.changed or report.close):
        for prefix, (n, params) in groups.items():
            console.print(f"unchanged: {escape(prefix)}.*: {n} tensors, {_human(params)} parameters bitwise equal in A and B")
    if report.close:
        console.print(f"{len(report.close)} tensors differ within rtol={report.rtol}, atol={report.atol}")
    render_findings_text(report.findings, console)
    console.print()
    verdict = "[green]identical[/]" if report.identical else "[red]different[/]"
    console.print(
        f"{verdict}: {len(report.unchanged)} unchanged, {len(report.close)} within tolerance, {len(report.changed)} changed, "
        f"{len(report.only_in_a)} only in A, {len(report.only_in_b)} only in B, {len(report.shape_mismatch)} shape and "
        f"{len(report.dtype_mismatch)} dtype mismatches"
    )


def render_gradflow_text(target: str, run: GradFlowRun, findings: list[Finding], layers: list[LayerStats],
                         plots: list[Any], console: Console, top: int = 8) -> None:
    """Findings first, then the layers with the weakest and strongest gradients, then where the plots are."""
    for w in run.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    reached = [ls for ls in layers if ls.reached and ls.grad_norm_mean > 0]
    if reached:
        t = Table(title=f"Layers by mean gradient norm ({len(layers)} layers, {len(run.steps)} recorded steps)", title_justify="left")
        for col in ("layer", "params", "grad norm", "max |grad|", "update/weight"):
            t.add_column(col, justify="left" if col == "layer" else "right", no_wrap=col != "layer")
        ordered = sorted(reached, key=lambda ls: ls.grad_norm_mean)
        shown: list[LayerStats | None] = list(ordered) if len(ordered) <= 2 * top else [*ordered[:top], None, *ordered[-top:]]
        for ls in shown:
            if ls is None:
                t.add_row("...", "", "", "", "")
                continue
            ratio = f"{ls.update_ratio_mean:.2g}" if ls.registered else "[red]never[/]"
            t.add_row(escape(ls.path), f"{ls.params:,}", f"{ls.grad_norm_mean:.3g}", f"{ls.grad_max_mean:.3g}", ratio)
        console.print(t)
    render_findings_text(findings, console)
    for p in plots:
        console.print(f"plot: {escape(str(p))}")


# --- formats CI systems read -----------------------------------------------------------------------------

@render_text.register
def render_lint_text(result: LintResult, console: Console) -> None:
    for f in result.findings:
        mark = "" if f.autofix is None else " [*]" if f.autofix.safe else " [unsafe fix]"
        console.print(f"{escape(str(f.location or ''))}: [{_STYLE[f.severity]}]{f.rule}[/]{escape(mark)} {escape(f.message)}")
    for e in result.errors:
        console.print(f"[yellow]{escape(e)}[/]")
    n = len(result.findings)
    summary = f"{n} finding{'s' if n != 1 else ''} in {result.files} files"
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


@render_text.register
def _render_gradflow_report(report: GradflowReport, console: Console, **options: Any) -> None:
    render_gradflow_text(report.target, report.run, report.findings, report.layers, report.plots, console, **options)
