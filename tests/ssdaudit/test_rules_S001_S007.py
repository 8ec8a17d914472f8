"""``ssdaudit resume`` (S001-S007): nine training scripts written the way people write them, each resumed from its
own checkpoint with one piece of state lost, and its exact twin (``--fixed``) that restores what it uses. The cause
must be named for each, and no twin flagged (the twins that do not save RNG states use no randomness)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssdaudit.cli.main import app
from ssdaudit.training.resume.audit import audit_resume

SCRIPTS = Path(__file__).resolve().parents[1] / "data" / "resume"

# script, --at, --steps, resume arguments, the rule named, a word its message must hold
CASES = [
    ("optimizer_momentum", 8, 4, "--resume {checkpoint}", "S005", "momentum_buffer"),
    ("adam_moments", 8, 4, "--resume-from {checkpoint}", "S005", "exp_avg"),
    ("scheduler", 6, 4, "--resume {checkpoint}", "S004", "scheduler"),
    ("grad_scaler", 8, 4, "--resume {checkpoint}", "S006", "GradScaler"),
    ("rng_dropout", 8, 4, "--resume {checkpoint}", "S003", "`2`"),
    ("epoch_counter", 8, 4, "--resume {checkpoint}", "S007", "epoch counter"),
    ("data_position", 5, 4, "--resume {checkpoint}", "S001", "position in the epoch"),
    ("weights_not_loaded", 6, 4, "--resume {checkpoint}", "S002", "not loaded"),
    ("shuffle_global_rng", 6, 4, "--resume {checkpoint}", "S003", "global torch RNG"),
]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the scripts write their checkpoints into the working folder


@pytest.mark.parametrize("name,at,steps,resume,code,word", CASES, ids=[c[0] for c in CASES])
def test_the_cause_is_named_and_the_twin_is_exact(name: str, at: int, steps: int, resume: str, code: str,
                                                  word: str) -> None:
    script = str(SCRIPTS / f"{name}.py")
    buggy = audit_resume(["python", script], at, steps, resume)
    assert buggy.diverged_at is not None
    causes = [f for f in buggy.findings if f.rule != "S008"]  # S008: what its watch found missing at the save line
    assert [f.rule for f in causes] == [code], buggy.findings
    assert word in causes[0].message
    assert causes[0].location is not None and causes[0].location.path.endswith(f"{name}.py")
    assert buggy.exit_code() == 1
    assert buggy.max_abs_diff is not None and (buggy.max_abs_diff > 0 or code == "S006")  # CPU fp32: no overflow
    twin = audit_resume(["python", script, "--fixed"], at, steps, resume)
    assert twin.diverged_at is None and twin.findings == [], twin.findings
    assert twin.compared == steps and twin.max_abs_diff == 0.0 and twin.exit_code() == 0


def test_a_resumed_run_that_goes_on_past_the_end_restarted_its_epoch_counter() -> None:
    """With an unshuffled loader, every compared step of the resumed run equals the uninterrupted run's; the epoch loop
    restarted at 0 shows only in its length: more steps than the uninterrupted run had left (S007). The twin that
    continues at the next epoch runs exactly the steps left and is exact."""
    script = str(SCRIPTS / "epoch_restart_unshuffled.py")
    buggy = audit_resume(["python", script], 4, 12, "--resume {checkpoint}")
    causes = [f for f in buggy.findings if f.rule != "S008"]
    assert [f.rule for f in causes] == ["S007"], buggy.findings
    assert "past the end" in causes[0].message and "had 8 left" in causes[0].message, causes[0].message
    assert buggy.exit_code() == 1
    twin = audit_resume(["python", script, "--fixed"], 4, 12, "--resume {checkpoint}")
    assert twin.findings == [] and twin.diverged_at is None and twin.exit_code() == 0, twin.findings


def test_cli_json_and_exit_codes() -> None:
    runner = CliRunner()
    script = str(SCRIPTS / "optimizer_momentum.py")
    res = runner.invoke(app, ["resume", "--at", "8", "--steps", "3", "--resume-args", "--resume {checkpoint}",
                              "--format", "json", "--", "python", script])
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout[res.stdout.index("{"):])
    assert doc["match"] is False and doc["saved_step"] == 8 and doc["diverged_at"] == 1
    assert [f["rule"] for f in doc["findings"]] == ["S005", "S008"]
    res = runner.invoke(app, ["resume", "--at", "8", "--steps", "3", "--resume-args", "--resume {checkpoint}",
                              "--format", "sarif", "--", "python", script, "--fixed"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout[res.stdout.index("{"):])["runs"][0]["results"] == []


def test_no_checkpoint_after_at_exits_2() -> None:
    res = CliRunner().invoke(app, ["resume", "--at", "1000", "--steps", "2", "--resume-args", "--resume {checkpoint}",
                                   "--", "python", str(SCRIPTS / "scheduler.py")])
    assert res.exit_code == 2
    assert "saved no checkpoint at or after optimizer step 1000" in res.output


def test_a_failing_resume_command_exits_2() -> None:
    res = CliRunner().invoke(app, ["resume", "--at", "6", "--steps", "2", "--resume-args", "--no-such-flag {checkpoint}",
                                   "--", "python", str(SCRIPTS / "scheduler.py")])
    assert res.exit_code == 2
    assert "the resumed run failed" in res.output


def test_resume_args_must_name_the_checkpoint() -> None:
    res = CliRunner().invoke(app, ["resume", "--at", "6", "--steps", "2", "--resume-args", "--resume",
                                   "--", "python", str(SCRIPTS / "scheduler.py")])
    assert res.exit_code == 2 and "{checkpoint}" in res.output


def test_patches_are_restored_after_the_run() -> None:
    import torch
    from torch.utils.data import DataLoader

    before = (torch.save, torch.Tensor.backward, torch.amp.GradScaler.scale, DataLoader.__iter__)
    audit_resume(["python", str(SCRIPTS / "grad_scaler.py"), "--fixed"], 8, 2, "--resume {checkpoint}")
    assert (torch.save, torch.Tensor.backward, torch.amp.GradScaler.scale, DataLoader.__iter__) == before
    assert not os.path.exists("ckpt-copy")
