"""``ssdlite train --resume`` passes ``ssdaudit resume`` exactly: the run resumed from its epoch-1 checkpoint (through
``{checkpoint_dir}``, a copy of the run folder) trains the next steps bit for bit as the uninterrupted run did."""

from __future__ import annotations

from pathlib import Path

from ssdaudit.training.resume.audit import audit_resume


def test_ssdlite_train_resume_is_exact(tmp_path: Path) -> None:
    # the `ssdlite` console script's entry point as a file: under pytest, `-m ssdlite_model.cli` would be imported
    # through pytest's assertion-rewriting loader (the package ships in the same distribution as the pytest11 plugin,
    # so pytest marks it for rewriting), which runpy cannot run; outside pytest `-m` works (the README's command)
    launcher = tmp_path / "ssdlite_train.py"
    launcher.write_text("from ssdlite_model.cli import main\n\nmain()\n")
    command = ["python", str(launcher), "train", "--data", "synthetic", "--epochs", "3", "--image-size",
               "64", "--width-mult", "0.25", "--n-train", "16", "--n-val", "4", "--batch-size", "8", "--out",
               str(tmp_path / "run")]
    report = audit_resume(command, 2, 2, "--resume --out {checkpoint_dir}")
    assert report.saved_step == 2 and report.compared == 2
    assert report.diverged_at is None and report.max_abs_diff == 0.0
    assert [f for f in report.findings if f.rule.startswith("S")] == []
