"""``ssdaudit resume --at N --steps K --resume-args "... {checkpoint}" -- python train.py ARGS``: did a resumed run
continue exactly?"""

from __future__ import annotations

import sys

import typer

from ssdaudit.cli.app import app
from ssdaudit.cli.output import Format, cli_errors, emit, exit_with


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             options_metavar="[OPTIONS] -- python train.py [ARGS]",
             short_help="Run a script, resume it from its own checkpoint, name where and why the runs differ.")
def resume(
    ctx: typer.Context,
    at: int = typer.Option(..., "--at", min=1, help="Keep the first checkpoint the script saves at or after this "
                           "optimizer step."),
    steps: int = typer.Option(..., "--steps", min=1, help="Optimizer steps compared after the checkpoint."),
    resume_args: str = typer.Option(..., "--resume-args", help="Arguments that make the script resume, with "
                                    "{checkpoint} (the saved file) or {checkpoint_dir} (its folder)."),
    fmt: Format = typer.Option(Format.text, "--format", help="text, json, sarif or github."),
    strict: bool = typer.Option(False, "--strict", help="Warnings fail too (exit 1)."),
    debug: bool = typer.Option(False, "--debug", help="Show the script's traceback when it fails."),
) -> None:
    """Run a training script (`-- python train.py ARGS`, or `-- python -m package.module ARGS`) in this process with
    per-step fingerprints (the batch, loss, learning rates, gradients, parameters, GradScaler scale, RNG states),
    keep a copy of the first checkpoint it saves at or after step --at, and stop --steps steps later; then run
    `python train.py ARGS RESUME-ARGS` from that copy in a fresh process for --steps steps and compare: the first
    step that differs and its cause (S001-S007), and how far apart the runs end. Exact on CPU.

    Exit codes: 0 the resumed run matches, 1 it does not (warnings too with --strict), 2 the script failed, saved no
    checkpoint at or after --at, or the resumed run failed.

    Examples:

      ssdaudit resume --at 6 --steps 4 --resume-args "--resume {checkpoint}" -- python train.py --epochs 3

      ssdaudit resume --at 8 --steps 4 --resume-args "--resume --out {checkpoint_dir}" -- python -m ssdlite_model.cli train --out runs/r
    """
    with cli_errors(fmt is Format.json, debug):
        from ssdaudit.core.script_command import parse_command
        from ssdaudit.training.resume.process import ResumedProcess

        parse_command(list(ctx.args))  # a mistyped option or a missing script: refused before torch is imported
        if "{checkpoint}" not in resume_args and "{checkpoint_dir}" not in resume_args:
            from ssdaudit.core.errors import UsageError

            raise UsageError("--resume-args must name the checkpoint: {checkpoint} (the saved file) or "
                             "{checkpoint_dir} (its folder), e.g. --resume-args \"--resume {checkpoint}\"")

        # the resumed run's interpreter first: its start-up and imports overlap with ours and with the first run
        resumed = ResumedProcess(None if fmt is Format.text else sys.stderr)
        try:
            from ssdaudit.training.resume.audit import audit_resume
        except BaseException:
            resumed.cancel()
            raise
        report = audit_resume(list(ctx.args), at, steps, resume_args, resumed.script_stdout, resumed=resumed)
        words = report.target.split()
        emit(report, fmt, words[1] if len(words) > 1 and words[1] != "-m" else None)
    exit_with(report, strict)
