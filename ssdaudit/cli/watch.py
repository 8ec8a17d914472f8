"""``ssdaudit watch -- python train.py ARGS``: run a training script with the doctor attached, name its silent errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ssdaudit.cli.app import app
from ssdaudit.cli.output import Format, cli_errors, emit, exit_with

if TYPE_CHECKING:
    from ssdaudit.training.doctor.report import DoctorReport


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             options_metavar="[OPTIONS] -- python train.py [ARGS]",
             short_help="Run a training script under the training doctor: name its silent errors.")
def watch(
    ctx: typer.Context,
    steps: int = typer.Option(20, "--steps", min=1, help="Stop the script after this many optimizer steps."),
    every: int = typer.Option(1, "--every", min=1, help="Value checks that sync with the device run every N steps."),
    ignore: str = typer.Option("", "--ignore", help="Rule codes to skip, comma-separated, e.g. T006,T012."),
    fmt: Format = typer.Option(Format.text, "--format", help="text, json, sarif or github."),
    strict: bool = typer.Option(False, "--strict", help="Warnings fail too (exit 1)."),
    debug: bool = typer.Option(False, "--debug", help="Show the script's traceback when it fails."),
    plot: Path | None = typer.Option(None, "--plot", metavar="PNG",
                                     help="Draw the run (loss, learning rates, gradient norms, update ratio per "
                                          "step, findings marked) to this PNG file."),
) -> None:
    """Run a training script (`-- python train.py ARGS`, or `-- python -m package.module ARGS`) in this process with
    every optimizer it builds watched, stop it after --steps optimizer
    steps, and name the silent errors of its loop (T001-T029, G001-G006). The script's own output passes through
    (to stderr with --format json, sarif or github, so that stdout holds only the report). Under torchrun
    (`torchrun --nproc_per_node 2 -m ssdaudit watch -- python train.py`) every rank watches, the ranks exchange their
    evidence through the job's key-value store (never a collective) and rank 0 reports for all of them. A script
    that starts its workers with `torch.multiprocessing.spawn` is run the usual way: each worker is watched as a
    torchrun rank is, and this process prints the report.

    Exit codes: 0 clean, 1 an error finding (warnings too with --strict), 2 the script failed or built no optimizer.

    Examples:

      ssdaudit watch -- python examples/watch_missing_zero_grad.py

      ssdaudit watch --steps 50 --format json -- python -m mypkg.train --epochs 1

      ssdaudit watch --plot run.png -- python train.py
    """
    from ssdaudit.core.findings import rule_codes

    with cli_errors(fmt is Format.json, debug):
        from ssdaudit.core.errors import UsageError

        if plot is not None:
            _check_plot_path(plot)
        codes = [c for c in ignore.split(",") if c.strip()]
        _, unknown = rule_codes(codes)
        if unknown:
            raise UsageError(f"unknown rule codes in --ignore: {', '.join(unknown)}")
        from ssdaudit.core.script_command import parse_command

        parse_command(list(ctx.args))  # a mistyped option or a missing script: refused before torch is imported
        from ssdaudit.training.doctor.runner import run_watched

        from ssdaudit.core.errors import ScriptError, ScriptInterrupted

        try:
            report = run_watched(list(ctx.args), steps, every, codes, None if fmt is Format.text else sys.stderr)
        except (ScriptError, ScriptInterrupted) as exc:
            # what the steps before the failure showed is often its cause: print it, then the error (exit 2);
            # under --format json the error document carries it
            # a clean report too when steps ran: "no silent errors found" in them is worth knowing before a crash
            shown = exc.report is not None and (bool(exc.report.findings) or isinstance(exc, ScriptInterrupted)
                                                or exc.report.steps > 0)
            if plot is not None and exc.report is not None and exc.report.steps > 0 and os.environ.get("RANK", "0") == "0":
                _draw(exc.report, plot)
            if shown and exc.report is not None and fmt not in (Format.json, Format.sarif):
                n = exc.report.steps
                exc.report.notes.append(f"the script stopped after {n} optimizer step{'' if n == 1 else 's'} "
                                        "(the error below): what is reported covers those steps only")
                emit(exc.report, fmt, _script_file(exc.report.target))
            raise
        if os.environ.get("RANK", "0") != "0":
            # under torchrun every rank watches and posts its evidence; rank 0 merges and reports, and its exit code
            # is the verdict: another rank ending with 1 first would make torchrun stop rank 0 before it reports
            raise typer.Exit(0)
        failed = _draw(report, plot) if plot is not None else None
        emit(report, fmt, _script_file(report.target))
        if failed is not None:
            raise UsageError(failed)
    exit_with(report, strict)


def _check_plot_path(path: Path) -> None:
    """Refuse a --plot path that cannot be written, before the script runs. Raises ``UsageError``."""
    from ssdaudit.core.errors import UsageError

    target = path.expanduser()
    if target.is_dir():
        raise UsageError(f"--plot {path}: is a directory; give a file path such as run.png")
    if target.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UsageError(f"--plot {path}: give a .png, .pdf or .svg path (the format follows the suffix)")
    if not target.parent.resolve().is_dir():
        raise UsageError(f"--plot {path}: the folder {path.parent} does not exist; create it first or choose another path")
    if not os.access(target.parent.resolve(), os.W_OK):
        raise UsageError(f"--plot {path}: the folder {path.parent} is not writable; choose another path")


def _draw(report: DoctorReport, path: Path) -> str | None:
    """Write the run's picture to ``path`` (atomically) and name it in the report; the one-line error, or None."""
    from ssdaudit.training.doctor.picture import plot_run

    try:
        plot_run(report, path.expanduser())
    except OSError as exc:
        return f"--plot {path}: cannot write it ({exc.strerror or exc}); choose another path"
    report.plot = str(path)
    return None


def _script_file(target: str) -> str | None:
    """The script of ``python train.py ...`` (where SARIF and annotations point), None for ``python -m module``."""
    words = target.split()
    return words[1] if len(words) > 1 and words[1] != "-m" else None
