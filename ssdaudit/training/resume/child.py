"""The second run of ``ssdaudit resume``, in a fresh process: ``python -m ssdaudit.training.resume.child``.

``ssdaudit resume`` starts it before its first run, so that the interpreter's start and the imports of torch and
of the fingerprinting code overlap with that run; it then waits for one line of JSON on stdin, the job:
``{"steps": K, "out": PATH, "cwd": DIR, "command": ["train.py", ARGS..., RESUME-ARGS...], "threads": N}``
(N: the first run's torch intra-op threads, so that CPU reductions sum in the same order). It runs the command in
``cwd`` for K optimizer steps with the same fingerprints as the first run (no doctor: the first run's watch judged
the checkpoints) and writes them to ``out`` (JSON: ``prints``, one ``RunPrints`` per optimizer, or ``error``) and
the parameters after the last step to ``out`` + ".params.pt". End of input without a job (the first run failed):
exit 0 at once. Internal: only ``ssdaudit resume`` starts it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    from ssdaudit.core.errors import ScriptError, UserError
    from ssdaudit.core.io import atomic_write_text
    from ssdaudit.training.doctor.runner import run_watched
    from ssdaudit.training.resume.patches import original_save
    from ssdaudit.training.resume.recorder import ResumeRunner

    line = sys.stdin.readline()
    if not line.strip():
        return 0
    job = json.loads(line)
    steps, out = int(job["steps"]), Path(job["out"])
    os.chdir(job["cwd"])
    if job.get("threads"):  # the first run's intra-op threads: CPU float sums in the same order, bit for bit
        import torch

        torch.set_num_threads(int(job["threads"]))
    runner = ResumeRunner(steps, keep_at=steps, doctor=False)
    doc: dict[str, object] = {}
    try:
        run_watched(list(job["command"]), runner=runner)
    except (ScriptError, UserError) as exc:
        doc["error"] = str(exc)
    except BaseException as exc:  # noqa: BLE001  (whatever ends the script is reported, one line)
        doc["error"] = f"{type(exc).__name__}: {exc}"
    doc["prints"] = [f.prints.to_dict() for f in runner.fingerprinters]
    if runner.fingerprinters and runner.fingerprinters[0].kept is not None:
        original_save()(runner.fingerprinters[0].kept, str(out) + ".params.pt")
    atomic_write_text(out, json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
