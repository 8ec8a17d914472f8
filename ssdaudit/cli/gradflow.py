"""``ssdaudit gradflow``: a few monitored training steps of a target, or a logged run, into G-findings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ssdaudit.cli.app import app, fail, parse_shape, timeout_option
from ssdaudit.cli.output import Format, cli_errors, emit, exit_with

if TYPE_CHECKING:
    from ssdaudit.training.gradflow import GradflowReport


@app.command()
def gradflow(
    target: str = typer.Argument(..., help="model.py[:NAME], package.module:NAME, or a RUN_DIR with a gradflow log."),
    steps: int = typer.Option(3, "--steps", min=1, help="Training steps of the probe."),
    input_shape: str = typer.Option(None, "--input-shape", help="Probe input shape, e.g. 8,3,300,300 (replaces the file's example_input())."),
    batch_size: int = typer.Option(2, "--batch-size", min=1, help="Images per step for this project's SSDLite models."),
    lr: float = typer.Option(0.01, "--lr", help="Learning rate of the default SGD optimizer."),
    out: Path = typer.Option(None, "--out", help="Write the log and the PNG plots here."),
    fmt: Format = typer.Option(Format.text, "--format", help="text, json, sarif (GitHub code scanning) or github (workflow annotations)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for load and probe errors."),
    timeout: float = timeout_option(),
    tensorboard: Path = typer.Option(None, "--tensorboard", help="Also write the run as TensorBoard events to this folder."),
) -> None:
    """Follow gradients through a few training steps (or a logged run) and name the parameters that do not learn.

    For a model file: input from example_input() or --input-shape, optimizer from build_optimizer(model) or SGD over
    model.parameters(), loss from compute_loss(output) or the sum of the outputs' means. This project's SSDLite
    models train on synthetic shapes with the MultiBox loss.

    Exit codes: 0 clean, 1 an error finding (G001-G004, G006), 2 could not run (load, probe or log problem).

    Examples:

      ssdaudit gradflow examples/buggy_plain_list.py --steps 2 --out out/gradflow

      ssdaudit gradflow runs/shapes            # a RUN_DIR written by `ssdlite train --gradflow`

      ssdaudit gradflow runs/shapes --tensorboard runs/shapes/tb   # then: tensorboard --logdir runs/shapes/tb

      ssdaudit gradflow mynet.py:build --input-shape 8,3,224,224 --format json
    """
    with cli_errors(fmt is Format.json, debug):
        report, title = _gradflow_report(target, steps, input_shape, batch_size, lr, out, fmt, timeout)
        if tensorboard is not None:
            from ssdaudit.integrations.tensorboard import write_run

            try:
                write_run(report.run, report.findings, tensorboard)
            except OSError as exc:
                fail(f"cannot write TensorBoard events to {tensorboard}: {exc.strerror or exc}")
        if out is not None:
            from ssdaudit.render.plots import plot_gradflow_run

            try:
                report.plots = plot_gradflow_run(report.run, report.layers, out, title)
            except OSError as exc:
                fail(f"cannot write plots to {out}: {exc.strerror or exc}")
        from ssdaudit.core.targets import TargetSpec

        emit(report, fmt, TargetSpec.parse(target).file if not Path(target).is_dir() else None)
    exit_with(report)


def _gradflow_report(target: str, steps: int, input_shape: str | None, batch_size: int, lr: float, out: Path | None,
                     fmt: Format, timeout: float) -> "tuple[GradflowReport, str]":
    """A logged run read back and analysed, or the probe pipeline on a model target (its code under the time limit)."""
    from ssdaudit.training.gradflow import GradflowReport, analyse_gradflow, read_gradflow_log

    path = Path(target)
    if path.is_dir():
        run = read_gradflow_log(path)
        for w in run.warnings:
            typer.echo(f"warning: {w}", err=True)
        findings, layers = analyse_gradflow(run)
        return GradflowReport(target, run, findings, layers, []), f"Gradient flow: {path} ({len(run.steps)} steps)"
    from ssdaudit.render.progress import progress_bar
    from ssdaudit.training.gradflow.pipeline import gradflow_target

    shape = parse_shape(input_shape) if input_shape else None
    log_dir = out / "gradflow" if out is not None else None
    with progress_bar(steps, "probe steps", fmt is Format.text) as advance:
        report = gradflow_target(target, steps, shape, batch_size, lr, log_dir, timeout,
                                 progress=advance and (lambda _step: advance()))
    return report, f"Gradient flow: {target} ({steps} steps)"
