"""``audit_resume``: run a training script for N+K optimizer steps with per-step fingerprints, keep a copy of the
first checkpoint it saves at or after step N, run it again resumed from that copy for K steps in a fresh process,
and name the first step where the two differ and why (``ssdaudit resume``)."""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from ssdaudit.core.errors import ScriptError, UsageError
from ssdaudit.core.script_command import parse_command
from ssdaudit.training.doctor.runner import run_watched
from ssdaudit.training.resume.diagnose import diagnose
from ssdaudit.training.resume.fingerprint import RunPrints
from ssdaudit.training.resume.process import ResumedProcess
from ssdaudit.training.resume.recorder import ResumeRunner
from ssdaudit.training.resume.report import ResumeReport

PLACEHOLDERS = ("{checkpoint}", "{checkpoint_dir}")


def audit_resume(command: list[str], at: int, steps: int, resume_args: str,
                 script_stdout: TextIO | None = None, workdir: Path | None = None,
                 resumed: ResumedProcess | None = None) -> ResumeReport:
    """Run 1: ``command`` in this process until ``steps`` optimizer steps after its first checkpoint saved at or after
    step ``at``; run 2: ``command`` + ``resume_args`` (``{checkpoint}``: the copy of that checkpoint, a file or a DCP
    folder; ``{checkpoint_dir}``: a copy of the folder it was saved into) in a subprocess for ``steps`` steps.
    ``workdir``: where the copies go (default: a temporary folder, removed after). ``resumed``: the second run's
    process, started early by the caller (``ssdaudit resume`` starts it before its own imports), or None to start it
    here; it is ended either way.

    Raises ``UsageError`` (bad arguments), ``ScriptError`` (the script failed, saved no checkpoint at or after
    ``at``, or the resumed run failed)."""
    if resumed is None:
        resumed = ResumedProcess(script_stdout)  # started now: its start-up overlaps with the first run
    try:
        return _checked(command, at, steps, resume_args, resumed, workdir)
    finally:
        resumed.cancel()


def _checked(command: list[str], at: int, steps: int, resume_args: str, resumed: ResumedProcess,
             workdir: Path | None) -> ResumeReport:
    if at < 1 or steps < 1:
        raise UsageError("--at and --steps must be at least 1")
    if not any(p in resume_args for p in PLACEHOLDERS):
        raise UsageError("--resume-args must name the checkpoint: {checkpoint} (the saved file) or {checkpoint_dir} "
                         "(its folder), e.g. --resume-args \"--resume {checkpoint}\"")
    try:
        extra = shlex.split(resume_args)
    except ValueError as exc:
        raise UsageError(f"--resume-args: {exc}") from None
    cmd = parse_command(command)
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="ssdaudit-resume-") as tmp:
            return _audit(command, cmd, at, steps, extra, resume_args, resumed, Path(tmp))
    return _audit(command, cmd, at, steps, extra, resume_args, resumed, workdir.resolve())


def _audit(command: list[str], cmd: object, at: int, steps: int, extra: list[str], resume_args: str,
           resumed: ResumedProcess, work: Path) -> ResumeReport:
    import torch

    threads = torch.get_num_threads()  # the resumed run computes with as many threads (the same reduction order)
    runner = ResumeRunner(sys.maxsize, at=at, after=steps, copy_dir=work / "copy",
                          copy_folder="{checkpoint_dir}" in resume_args)
    run_watched(command, script_stdout=resumed.script_stdout, runner=runner)
    cap = runner.recorder.capture
    done = runner.rounds()
    if cap is None:
        raise ScriptError(f"the script saved no checkpoint at or after optimizer step {at} (it ran {done} steps): "
                          "lower --at, or make it save (torch.save or torch.distributed.checkpoint.save)")
    if not runner.fingerprinters:
        raise ScriptError("the script built no torch.optim optimizer: nothing to compare")
    first = runner.fingerprinters[0]
    ckpt = str(cap.path)
    folder = str(cap.dir_copy) if cap.dir_copy is not None else str(cap.path.parent)
    args2 = [w.replace("{checkpoint_dir}", folder).replace("{checkpoint}", ckpt) for w in extra]
    words = list(command)
    if words and os.path.basename(words[0]).startswith("python") and not words[0].endswith(".py"):
        words = words[1:]
    out = work / "resumed.json"
    proc_status = resumed.run({"steps": steps, "out": str(out), "cwd": resumed.cwd, "command": [*words, *args2],
                               "threads": threads})
    resume_command = " ".join(["python", *(shlex.quote(w) for w in words), resume_args])  # the copy's path is temporary
    if not out.exists():
        raise ScriptError(f"the resumed run failed (exit status {proc_status}): {resume_command}")
    doc = json.loads(out.read_text())
    if doc.get("error"):
        raise ScriptError(f"the resumed run failed: {doc['error']} ({resume_command})")
    prints2 = [RunPrints.from_dict(d) for d in doc.get("prints", [])]
    if not prints2:
        raise ScriptError(f"the resumed run built no optimizer: {resume_command}")
    run2 = prints2[0]
    div, findings = diagnose(first.prints, run2, cap.step, cap.location, cap.optimizer_state,
                             cap.optimizer_step_count, run1_ended=len(first.prints.steps) < cap.step + steps)
    # what the first run's watch found missing from the checkpoints it saved (S008, S009): warnings beside the cause
    findings += [f for f in runner.report("").findings if f.rule in ("S008", "S009")]
    compared = min(len(run2.steps), len(first.prints.steps) - cap.step)
    notes = []
    if len(run2.steps) < steps and div is None:
        notes.append(f"the resumed run ended after {len(run2.steps)} of {steps} step{'' if steps == 1 else 's'}")
    max_abs, rel = _distance(first.kept, Path(str(out) + ".params.pt"))
    return ResumeReport(
        target=str(cmd), resume_command=resume_command, at=at, steps=steps, saved_step=cap.step,
        checkpoint=os.path.basename(ckpt), saved_at=str(cap.location) if cap.location else None, compared=compared,
        resumed_steps=len(run2.steps), diverged_at=div.step if div else None, fields=list(div.fields) if div else [],
        max_abs_diff=max_abs, rel_diff=rel, findings=findings,
        notes=notes, internal_errors=[e for w in runner.watches for e in w.ctx.internal_errors])


def _distance(kept: object, path: Path) -> tuple[float | None, float | None]:
    """(max |a - b|, ||a - b|| / ||a||) over every parameter, or (None, None) when either side is missing."""
    import torch

    if kept is None or not path.exists():
        return None, None
    other = torch.load(path, weights_only=True)
    a = list(kept)  # type: ignore[call-overload]
    if len(a) != len(other) or any(x.shape != y.shape for x, y in zip(a, other)):
        return None, None
    if not a:
        return 0.0, 0.0
    diff = max(float((x.detach().double() - y.double()).abs().max()) if x.numel() else 0.0 for x, y in zip(a, other))
    num = sum(float(((x.double() - y.double()) ** 2).sum()) for x, y in zip(a, other)) ** 0.5
    den = sum(float((x.double() ** 2).sum()) for x in a) ** 0.5
    return diff, (num / den if den else 0.0)
