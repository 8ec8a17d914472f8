"""``parse_command``: the script command after ``--`` of ``ssdaudit watch`` and ``ssdaudit resume`` (``python
train.py ARGS`` or ``python -m package.module ARGS``), checked before anything heavy is imported: a mistyped option
or a missing script is refused at once. Imports no torch."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ssdaudit.core.errors import UsageError


@dataclass(frozen=True)
class ScriptCommand:
    """What to run: a script path or a module (``-m``), and its arguments (``sys.argv[1:]``)."""

    target: str
    is_module: bool
    args: tuple[str, ...]
    warnings: tuple[str, ...] = ()  # -W filters given before the script, applied for the run

    def __str__(self) -> str:
        return " ".join(["python", *(["-m"] if self.is_module else []), self.target, *self.args])


# Interpreter options that change nothing the doctor sees, skipped: -u (unbuffered output), -B (no .pyc files);
# -W ARG (a warnings filter) is applied for the run.
_HARMLESS = ("-u", "-B")


def parse_command(argv: list[str]) -> ScriptCommand:
    """``["python", "train.py", ...]`` or ``["python", "-m", "pkg.mod", ...]`` (the interpreter word may be left
    out; ``-u``, ``-B`` and ``-W ARG`` may come before the script). Raises ``UsageError`` for anything else: an
    option of ours misspelt before ``--``, another interpreter option, a missing script, a file that is not Python."""
    words = list(argv)
    if words and words[0].startswith("--") and words[0] != "--":
        raise UsageError(f"no such option: {words[0]} (ssdaudit watch --help lists them); the script's command goes "
                         "after --: ssdaudit watch [OPTIONS] -- python train.py [ARGS]")
    if words and os.path.basename(words[0]).startswith("python") and not words[0].endswith(".py"):
        words = words[1:]
    warn: list[str] = []
    while words and (words[0] in _HARMLESS or words[0].startswith("-W")):
        option = words.pop(0)
        if option.startswith("-W"):
            value = option[2:] or (words.pop(0) if words else "")
            if not value:
                raise UsageError("-W needs a warnings filter: -- python -W ignore train.py")
            warn.append(value)
    if not words:
        raise UsageError("nothing to run: ssdaudit watch -- python train.py [ARGS] (or -- python -m package.module)")
    if words[0] == "-m":
        if len(words) < 2:
            raise UsageError("-m needs a module name: ssdaudit watch -- python -m package.module")
        return ScriptCommand(words[1], True, tuple(words[2:]), tuple(warn))
    if words[0].startswith("-"):
        raise UsageError(f"python option {words[0]} is not supported by ssdaudit watch (a script or -m module, after "
                         "-u, -B or -W ARG only)")
    if not os.path.isfile(words[0]):
        raise UsageError(f"no such script: {words[0]}")
    if not _is_python(words[0]):
        raise UsageError(f"{words[0]} is not a Python script (.py, or a file whose first line is a python #!): "
                         "ssdaudit watch -- python train.py")
    return ScriptCommand(words[0], False, tuple(words[1:]), tuple(warn))


def _is_python(path: str) -> bool:
    if path.endswith((".py", ".pyw")):
        return True
    try:
        with open(path, "rb") as f:
            head = f.readline(200)
    except OSError:
        return False
    return head.startswith(b"#!") and b"python" in head
