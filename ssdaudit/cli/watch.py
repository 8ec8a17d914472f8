"""``ssdaudit watch -- python train.py ARGS``: run a training script with the doctor attached, name its silent errors."""

from __future__ import annotations

import os
import sys

import typer

from ssdaudit.cli.app import app
from ssdaudit.cli.output import Format, cli_errors, emit, exit_with


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
) -> None:
    """Run a training script (`-- python train.py ARGS`, or `-- python -m package.module ARGS`) in this process with
    every optimizer it builds watched, stop it after --steps optimizer
    steps, and name the silent errors of its loop (T001-T023, G001-G006). The script's own output passes through
    (to stderr with --format json, sarif or github, so that stdout holds only the report). Under torchrun
    (`torchrun --nproc_per_node=2 -m ssdaudit.cli.main watch -- python train.py`) every rank watches and rank 0 reports.

    Exit codes: 0 clean, 1 an error finding (warnings too with --strict), 2 the script failed or built no optimizer.

    Examples:

      ssdaudit watch -- python examples/watch_missing_zero_grad.py

      ssdaudit watch --steps 50 --format json -- python -m mypkg.train --epochs 1
    """
    from ssdaudit.core.findings import rule_codes

    with cli_errors(fmt is Format.json, debug):
        from ssdaudit.core.errors import UsageError

        codes = [c for c in ignore.split(",") if c.strip()]
        _, unknown = rule_codes(codes)
        if unknown:
            raise UsageError(f"unknown rule codes in --ignore: {', '.join(unknown)}")
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
            if shown and exc.report is not None and fmt not in (Format.json, Format.sarif):
                emit(exc.report, fmt, _script_file(exc.report.target))
            raise
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank watches (T017 compares them); rank 0 reports
            emit(report, fmt, _script_file(report.target))
    exit_with(report, strict)


def _script_file(target: str) -> str | None:
    """The script of ``python train.py ...`` (where SARIF and annotations point), None for ``python -m module``."""
    words = target.split()
    return words[1] if len(words) > 1 and words[1] != "-m" else None
