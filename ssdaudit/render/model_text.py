"""Terminal views of the reports that need torch: params (and its layer table), diff, gradflow, watch.
Imported by ``render.text.render_text`` the first time it meets one of them."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ssdaudit.checkpoints.diff import DiffReport
from ssdaudit.core.diagnosis import consequences_line, tree
from ssdaudit.core.findings import RULES, Finding, Severity
from ssdaudit.registration.params import ParamsReport
from ssdaudit.render.text import _STYLE, render_findings_text, render_text
from ssdaudit.training.doctor import DoctorReport
from ssdaudit.training.gradflow import GradflowReport, GradFlowRun, LayerStats


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
    if report.probe is not None and (report.probe.device, report.probe.reason) != ("cpu", "built there"):
        console.print(escape(report.probe.describe()))
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
def _render_gradflow_report(report: GradflowReport, console: Console, **options: Any) -> None:
    render_gradflow_text(report.target, report.run, report.findings, report.layers, report.plots, console, **options)


@render_text.register
def render_doctor_text(report: DoctorReport, console: Console) -> None:
    """The terminal view of a DoctorReport, cause first: a headline naming each root cause (``2 causes found: T006
    at main.py:348, step 2; ...``), then one block per root (rule, where, what, the step it was first seen and the
    script's file:line that triggered it where known, the fix) with its consequences folded under it in one line
    and one short line each; then a one-line verdict (counting every finding, consequences included)."""
    title = f"Training doctor: {report.target} " if report.target else "Training doctor: "
    console.print(f"[bold]{escape(title)}({report.steps} optimizer step{'' if report.steps == 1 else 's'} watched)[/]")
    if report.summary:
        console.print(f"[bold]{escape(report.summary)}[/]")
    for root, consequences in tree(report.findings):
        console.print(f"[{_STYLE[root.severity]}]{root.rule} {root.name}[/]{escape(_where(root))}: {escape(root.message)}")
        console.print(f"  fix: {escape(root.fix)}  (docs/rules/{root.rule}.md)")
        if consequences:
            console.print(f"  {escape(consequences_line(root, consequences))}")
            for c in consequences:
                console.print(f"    [{_STYLE[c.severity]}]{c.rule}[/]{escape(_where(c))}: {escape(c.message)}", style="dim")
    for e in report.internal_errors:
        console.print(f"[dim]internal: a check failed and was skipped: {escape(e.splitlines()[0])}[/]")
    for n in getattr(report, "notes", ()):
        console.print(f"[dim]note: {escape(n)}[/]")
    counts = {s: sum(f.severity is s for f in report.findings) for s in Severity}
    if not report.findings:
        console.print("[green]no silent errors found[/]")
    else:
        console.print(f"{counts[Severity.ERROR]} errors, {counts[Severity.WARNING]} warnings, {counts[Severity.INFO]} notes")
    if report.plot:
        console.print(f"plot: {escape(report.plot)}")


def _where(f: Finding) -> str:
    """`` fc (step 2, train.py:30)``: a finding's label, then its step and the script's line where known."""
    when = ", ".join(([f"step {f.step}"] if f.step is not None else []) + ([str(f.location)] if f.location else []))
    return (f" {f.label}" if f.label else "") + (f" ({when})" if when else "")


import ssdaudit.render.resume_text  # noqa: E402,F401  (registers the ResumeReport renderer)
