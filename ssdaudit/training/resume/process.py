"""``ResumedProcess``: the interpreter of the second run of ``ssdaudit resume``, started as early as possible (its
start-up and the imports of torch and of the fingerprinting code overlap with the first run). Imports nothing heavy:
``ssdaudit resume`` starts it before its own imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, TextIO


class ResumedProcess:
    """The interpreter of the resumed run (``python -m ssdaudit.training.resume.child``), started before the first
    run so that its start-up and imports overlap with it, in the folder and environment ``ssdaudit resume`` was
    started with (what the first run changes of them does not leak into the second). Its output goes where the first
    run's goes (``script_stdout``, else stdout), through a pipe when that stream has no file descriptor."""

    def __init__(self, script_stdout: TextIO | None) -> None:
        self.script_stdout = script_stdout
        self.cwd = os.getcwd()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([p for p in [_root(), env.get("PYTHONPATH", "")] if p])
        self._piped = False
        stdout: Any = None
        if script_stdout is not None:
            try:
                script_stdout.fileno()
                stdout = script_stdout
            except (OSError, ValueError, AttributeError):
                stdout, self._piped = subprocess.PIPE, True
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "ssdaudit.training.resume.child"], stdin=subprocess.PIPE, stdout=stdout, env=env)

    def run(self, job: dict[str, Any]) -> int:
        """Hand the process its job (one JSON line) and wait for it to end; its exit status."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        self._proc = None
        if self.script_stdout is not None:
            self.script_stdout.flush()
        try:
            proc.stdin.write((json.dumps(job) + "\n").encode())
            proc.stdin.close()
        except BrokenPipeError:  # it died while starting; its status says how
            pass
        if self._piped and self.script_stdout is not None:
            assert proc.stdout is not None
            self.script_stdout.write(proc.stdout.read().decode(errors="replace"))
        return proc.wait()

    def cancel(self) -> None:
        """End the process without a job (the first run failed): end of input, then a kill if it does not exit."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            if proc.stdout is not None:
                proc.stdout.close()


def _root() -> str:
    """The folder holding the ``ssdaudit`` package (the child imports the same copy)."""
    return str(Path(__file__).resolve().parents[3])
