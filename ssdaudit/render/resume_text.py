"""The terminal view of a ``ResumeReport`` (``ssdaudit resume``): the runs compared, the verdict, the first differing
step and its cause with the fix, and how far apart the parameters end."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from ssdaudit.render.text import _STYLE, render_text
from ssdaudit.training.resume.report import ResumeReport


@render_text.register
def render_resume_text(report: ResumeReport, console: Console) -> None:
    console.print(f"[bold]Resume audit: {escape(report.target)}[/]")
    where = f" at {report.saved_at}" if report.saved_at else ""
    console.print(f"checkpoint {escape(report.checkpoint)} saved after step {report.saved_step}{escape(where)}; "
                  f"resumed for {report.resumed_steps} steps: {escape(report.resume_command)}")
    if report.diverged_at is None:
        console.print(f"[green]the resumed run matches the uninterrupted run exactly over {report.compared} steps "
                      f"(steps {report.saved_step + 1}-{report.saved_step + report.compared}; {report.tolerance})[/]")
    else:
        console.print(f"[bold red]the resumed run diverges at its step {report.diverged_at} (step "
                      f"{report.saved_step + report.diverged_at} of the uninterrupted run): "
                      f"{', '.join(report.fields)} differ[/]")
    for f in report.findings:
        loc = f" ({f.location})" if f.location else ""
        what = f" {f.subject}" if f.rule in ("S008", "S009") and f.subject else ""
        console.print(f"[{_STYLE[f.severity]}]{f.rule} {f.name}[/]{escape(what + loc)}: {escape(f.message)}")
        console.print(f"  fix: {escape(f.fix)}  (docs/rules/{f.rule}.md)")
    if report.max_abs_diff is not None:
        console.print(f"after {report.compared} steps the parameters differ by at most {report.max_abs_diff:.3g} "
                      f"(relative L2 {report.rel_diff:.3g})")
    for n in report.notes:
        console.print(f"[dim]note: {escape(n)}[/]")
    for e in report.internal_errors:
        console.print(f"[dim]internal: a check failed and was skipped: {escape(e.splitlines()[0])}[/]")
