"""What ``ssdaudit watch -- COMMAND`` accepts: the harmless interpreter options (-u, -B, -W ARG), and one-line
refusals for a misspelt option of ours, other interpreter options and files that are not Python."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from ssdaudit.core.errors import UsageError
from ssdaudit.core.script_command import parse_command
from ssdaudit.training.doctor.runner import run_watched

SCRIPT = """\
import warnings
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
warnings.warn("from the script", UserWarning)
for _ in range(3):
    opt.zero_grad()
    nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 2, (8,))).backward()
    opt.step()
"""


def test_harmless_interpreter_options_are_accepted(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    cmd = parse_command(["python", "-u", "-B", "-W", "ignore::DeprecationWarning", str(script), "--lr", "1"])
    assert cmd.target == str(script) and cmd.args == ("--lr", "1") and cmd.warnings == ("ignore::DeprecationWarning",)
    assert parse_command(["python", "-Werror", "-m", "pkg.train"]).warnings == ("error",)


def test_a_warnings_filter_applies_to_the_run_only(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        report = run_watched(["python", "-W", "ignore::UserWarning", str(script)], steps=3)
        assert report.steps == 3 and not [w for w in seen if "from the script" in str(w.message)]
        run_watched(["python", str(script)], steps=3)  # no filter: the script's warning is shown
        assert [w for w in seen if "from the script" in str(w.message)]


@pytest.mark.parametrize("argv, why", [
    (["--stepz", "3", "--", "python", "train.py"], "no such option: --stepz"),
    (["python", "-O", "train.py"], "python option -O is not supported"),
    (["python", "-W"], "-W needs a warnings filter"),
])
def test_bad_commands_are_one_line_refusals(argv: list[str], why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_command(argv)


def test_a_file_that_is_not_python_is_refused_before_running(tmp_path: Path) -> None:
    data = tmp_path / "config.yaml"
    data.write_text("hello: world\n")
    with pytest.raises(UsageError, match="is not a Python script"):
        parse_command(["python", str(data)])
    shebang = tmp_path / "train"
    shebang.write_text("#!/usr/bin/env python3\n" + SCRIPT)
    assert parse_command(["python", str(shebang)]).target == str(shebang)


@pytest.mark.parametrize("argv", [
    ["watch", "--bogus", "--", "python", "train.py"],
    ["watch", "--", "python", "no_such_script.py"],
    ["resume", "--at", "2", "--steps", "2", "--resume-args", "--resume", "--", "python", "no_such_script.py"],
    ["resume", "--at", "2", "--steps", "2", "--resume-args", "--resume x", "--", "python", __file__],
], ids=["unknown-option", "missing-script", "resume-missing-script", "resume-args-without-checkpoint"])
def test_a_mistaken_command_is_refused_before_torch_is_imported(argv: list[str]) -> None:
    """One line and exit 2 within the interpreter's start-up: the command after -- and --resume-args are checked
    before anything that imports torch."""
    import subprocess
    import sys

    code = ("import sys\nfrom ssdaudit.cli import main\nsys.argv = ['ssdaudit', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    print('exit', exc.code, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SSDAUDIT_RAISE_INTERNAL": ""})
    assert proc.stdout.strip().splitlines()[-1] == "exit 2 False", (proc.stdout, proc.stderr)
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
