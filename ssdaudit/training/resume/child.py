"""The second run of ``ssdaudit resume``, in a fresh process: ``python -m ssdaudit.training.resume.child STEPS OUT
-- python train.py ARGS RESUME-ARGS``. Runs the script for STEPS optimizer steps with the same fingerprints as the
first run and writes them to OUT (JSON: ``prints``, one ``RunPrints`` per optimizer, or ``error``), and the
parameters after the last step to OUT + ".params.pt". Internal: ``ssdaudit resume`` starts it."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    steps, out = int(argv[0]), Path(argv[1])
    command = argv[3:] if argv[2:3] == ["--"] else argv[2:]
    from ssdaudit.core.errors import ScriptError, UserError
    from ssdaudit.core.io import atomic_write_text
    from ssdaudit.training.doctor.runner import run_watched
    from ssdaudit.training.resume.recorder import ResumeRunner

    runner = ResumeRunner(steps, keep_at=steps)
    doc: dict[str, object] = {}
    try:
        run_watched(command, runner=runner)
    except (ScriptError, UserError) as exc:
        doc["error"] = str(exc)
    except BaseException as exc:  # noqa: BLE001  (whatever ends the script is reported, one line)
        doc["error"] = f"{type(exc).__name__}: {exc}"
    doc["prints"] = [f.prints.to_dict() for f in runner.fingerprinters]
    if runner.fingerprinters and runner.fingerprinters[0].kept is not None:
        from ssdaudit.training.resume.patches import original_save

        original_save()(runner.fingerprinters[0].kept, str(out) + ".params.pt")
    atomic_write_text(out, json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
