"""A picture of a watched run (``ssdaudit watch --plot run.png``, ``doctor.plot(path)``): per optimizer step, the loss,
the learning rate of each param group, the gradient norm of the whole model and of its top-level modules, and the
update-to-weight ratio, on shared step axes, with each finding's step marked and labelled with its code.

The figure is drawn from the report's ``RunSeries`` alone (the numbers the JSON report carries), with matplotlib's
Agg backend (files only, no display), log scales where a panel's values span more than 100x. It lives beside the
doctor rather than in ``ssdaudit.render`` so that ``doctor.plot(path)`` works in the user's process without the
training package importing the renderers (the layers go one way: render imports training, never the reverse).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssdaudit.core.findings import Severity

if TYPE_CHECKING:
    from ssdaudit.training.doctor.report import DoctorReport

PANELS = ("loss", "learning rate", "gradient norm (L2)", "update / weight ratio")
MODULES_SHOWN = 6  # top-level modules drawn in the gradient panel besides the whole model (the largest norms)
_MARK = {Severity.ERROR: "#d62728", Severity.WARNING: "#ff7f0e", Severity.INFO: "#7f7f7f"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _log_if_wide(ax: Any, values: list[float]) -> None:
    """Log scale when the panel's positive finite values span more than two orders of magnitude."""
    positive = [v for v in values if math.isfinite(v) and v > 0]
    if positive and max(positive) / min(positive) > 100:
        ax.set_yscale("log")


def _finite(values: list[float]) -> list[float]:
    """The values drawn: NaN (not recorded) and infinities (an overflow, marked by G006) leave gaps."""
    return [v if math.isfinite(v) else math.nan for v in values]


def draw_run(report: DoctorReport) -> Any:
    """The figure of ``report`` (a matplotlib ``Figure`` with one axis per ``PANELS`` entry, in that order; each
    line's label names its series: ``cross_entropy``, ``group 0``, ``model``, ``layer4`` ..., prefixed ``opt N:``
    when several optimizers were watched). The caller closes it."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(10, 10), sharex=True)
    several = len(report.series) > 1
    drawn: dict[str, list[float]] = {p: [] for p in PANELS}
    for n, s in enumerate(report.series, 1):
        prefix = f"opt {n}: " if several else ""
        steps = list(s.steps)
        ax_loss, ax_lr, ax_grad, ax_ratio = axes
        for name, values in s.loss.items():
            ax_loss.plot(steps, _finite(values), marker=".", label=prefix + name)
            drawn["loss"] += values
        for name, values in s.lr.items():
            ax_lr.plot(steps, _finite(values), marker=".", label=prefix + name)
            drawn["learning rate"] += values
        for k, (name, values) in enumerate(s.grad_norm.items()):
            if k > MODULES_SHOWN:
                break
            whole = name == "model"
            ax_grad.plot(steps, _finite(values), marker="." if whole else None, linewidth=2.2 if whole else 1.0,
                         alpha=1.0 if whole else 0.7, label=prefix + (name if whole else f"  {name}"))
            drawn["gradient norm (L2)"] += values
        if s.update_ratio:
            ax_ratio.plot(steps, _finite(s.update_ratio), marker=".", label=prefix + "all parameters")
            drawn["update / weight ratio"] += s.update_ratio
    for ax, panel in zip(axes, PANELS):
        ax.set_ylabel(panel)
        ax.grid(True, alpha=0.3)
        if drawn[panel]:
            _log_if_wide(ax, drawn[panel])
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, _missing(panel), transform=ax.transAxes, ha="center", va="center", color="#7f7f7f")
    _mark_findings(report, axes)
    axes[-1].set_xlabel("optimizer step")
    axes[-1].xaxis.get_major_locator().set_params(integer=True)
    title = f"Training doctor: {report.target}" if report.target else "Training doctor"
    fig.suptitle(title + (f"\n{report.summary}" if report.summary else "\nno silent errors found"), fontsize=10)
    fig.tight_layout()
    return fig


def _missing(panel: str) -> str:
    return {"loss": "no loss seen (computed without a torch.nn.functional loss, or not recorded)",
            "learning rate": "no learning rate recorded"}.get(panel, "no gradients recorded (gradflow off?)")


def _mark_findings(report: DoctorReport, axes: Any) -> None:
    """A vertical line at each finding's step on every panel (solid for a cause, dashed for a consequence), its code
    written at the top of the first panel; findings without a step (whole-run judgements) in a corner note."""
    at: dict[int, list[str]] = {}
    for f in report.findings:
        if f.step is None:
            continue
        at.setdefault(f.step, [])
        if f.rule not in at[f.step]:
            at[f.step].append(f.rule)
        for ax in axes:
            ax.axvline(f.step, color=_MARK[f.severity], linestyle="--" if f.caused_by else "-", linewidth=1.0,
                       alpha=0.8)
    top = axes[0]
    for step, codes in at.items():
        top.annotate(", ".join(codes), xy=(step, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                     textcoords="offset points", fontsize=8, fontweight="bold", va="top", rotation=90)
    whole = sorted({f.rule for f in report.findings if f.step is None})
    if whole:
        top.text(1.0, 1.02, "whole run: " + ", ".join(whole), transform=top.transAxes, ha="right", va="bottom",
                 fontsize=8)


FORMATS = ("png", "pdf", "svg")  # what ``plot_run`` writes, chosen by the file's suffix


def plot_run(report: DoctorReport, path: str | Path) -> Path:
    """Draw ``report`` (``draw_run``) to ``path``, written atomically (a temporary file beside it, then a rename), as
    PNG, PDF or SVG by its suffix. Returns the path; raises ``ValueError`` for another suffix, ``FileNotFoundError``
    when its folder does not exist (it is not created), ``OSError`` when the file cannot be written."""
    from ssdaudit.core.io import atomic_write

    target = Path(path)
    fmt = target.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"cannot draw the run as {target.name!r}: give a .png, .pdf or .svg path")
    if not target.parent.resolve().is_dir():
        raise FileNotFoundError(f"the folder {target.parent} does not exist: create it first or choose another path")
    fig = draw_run(report)
    try:
        atomic_write(target, lambda f: fig.savefig(f, format=fmt, dpi=100))
    finally:
        _pyplot().close(fig)
    return target
