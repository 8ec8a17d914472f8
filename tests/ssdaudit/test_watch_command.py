"""What ``ssdaudit watch -- COMMAND`` accepts: the harmless interpreter options (-u, -B, -W ARG), and one-line
refusals for a misspelt option of ours, other interpreter options and files that are not Python."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from ssdaudit.core.errors import UsageError
from ssdaudit.training.doctor.runner import parse_command, run_watched

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
