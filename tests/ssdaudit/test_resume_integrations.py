"""``ssdaudit resume`` on Lightning (``Trainer.fit(ckpt_path=...)``) and Hugging Face Trainer
(``resume_from_checkpoint``) scripts, through their own resume arguments: both resume exactly; a Lightning script
that loads only the weights (``load_from_checkpoint`` then a fresh ``fit``) is named (the scheduler restarts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssdaudit.training.resume.audit import audit_resume

SCRIPTS = Path(__file__).resolve().parents[1] / "data" / "resume"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_lightning_ckpt_path_resumes_exactly_and_weights_only_is_named() -> None:
    pytest.importorskip("lightning")
    script = str(SCRIPTS / "lightning_resume.py")
    exact = audit_resume(["python", script], 4, 4, "--ckpt_path {checkpoint}")
    assert exact.diverged_at is None and exact.compared == 4 and exact.max_abs_diff == 0.0
    assert [f for f in exact.findings if f.severity.value == "error"] == []
    buggy = audit_resume(["python", script], 4, 4, "--ckpt_path {checkpoint} --weights-only")
    assert buggy.diverged_at == 1
    assert [f.rule for f in buggy.findings if f.rule != "S008"] == ["S004"]


def test_hf_trainer_resume_from_checkpoint_resumes_exactly() -> None:
    pytest.importorskip("transformers")
    report = audit_resume(["python", str(SCRIPTS / "hf_trainer_resume.py")], 4, 4,
                          "--resume_from_checkpoint {checkpoint_dir}")
    assert report.diverged_at is None and report.compared == 4 and report.max_abs_diff == 0.0
