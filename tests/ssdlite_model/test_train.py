"""The trainer: exact resume, atomic checkpoints, divergence, run-directory errors, DDP through torchrun."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ssdlite_model import tiny
from ssdlite_model.cli import app
from ssdlite_model.train import CHECKPOINT, Diverged, Trainer, TrainError, TrainSettings, lr_factor

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def settings(out, **kw):
    base = dict(data="synthetic", epochs=2, batch_size=4, lr=0.01, image_size=64, width_mult=0.35, n_train=12,
                n_val=4, out=str(out), progress=False, eval_every=100)
    base.update(kw)
    return TrainSettings(**base)


def metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_resume_gives_the_same_losses(tmp_path):
    Trainer(settings(tmp_path / "full"), base_config=tiny()).fit()

    def killed(record):
        raise KeyboardInterrupt  # the process dies right after epoch 1 was saved

    with pytest.raises(KeyboardInterrupt):
        Trainer(settings(tmp_path / "half"), base_config=tiny(), on_epoch=killed).fit()
    assert [r["epoch"] for r in metrics(tmp_path / "half")] == [1]
    Trainer(settings(tmp_path / "half", resume=True), base_config=tiny()).fit()
    full, resumed = metrics(tmp_path / "full"), metrics(tmp_path / "half")
    assert [r["epoch"] for r in resumed] == [1, 2]
    assert [r["losses"] for r in resumed] == [r["losses"] for r in full]  # exact, not approximate
    a = torch.load(tmp_path / "full" / CHECKPOINT, weights_only=True)["model"]
    b = torch.load(tmp_path / "half" / CHECKPOINT, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_contents_and_eval_record(tmp_path):
    records = Trainer(settings(tmp_path / "r", epochs=1, eval_every=1), base_config=tiny()).fit()
    state = torch.load(tmp_path / "r" / CHECKPOINT, weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "step", "rng", "config", "settings"} <= set(state)
    assert state["epoch"] == 1 and state["step"] == 3 and state["config"]["num_classes"] == 4
    assert "map50" in records[0] and (tmp_path / "r" / "training.png").exists()
    # no weight decay on BatchNorm parameters and biases
    opt = state["optimizer"]["param_groups"]
    assert opt[0]["weight_decay"] == 1e-4 and opt[1]["weight_decay"] == 0.0


def test_killed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    trainer = Trainer(settings(tmp_path / "r", epochs=1), base_config=tiny())
    trainer.fit()
    before = (tmp_path / "r" / CHECKPOINT).read_bytes()
    real_save = torch.save

    def dies_midway(obj, f, *a, **kw):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(TrainError, match="No space left on device.*previous checkpoint"):
        trainer.save()
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "r" / CHECKPOINT).read_bytes() == before
    assert torch.load(tmp_path / "r" / CHECKPOINT, weights_only=True)["epoch"] == 1
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    trainer = Trainer(settings(tmp_path / "r", epochs=3), base_config=tiny())
    real = trainer.criterion.forward
    calls = {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        out = real(*args)
        if calls["n"] == 5:  # epoch 2, step 2
            out["loss"] = out["loss"] * float("nan")
        return out

    trainer.criterion.forward = poisoned
    with pytest.raises(Diverged, match="epoch 2, step 5"):
        trainer.fit()
    assert torch.load(tmp_path / "r" / CHECKPOINT, weights_only=True)["epoch"] == 1


def test_run_directory_errors(tmp_path):
    args = ["train", "--preset", "tiny", "--epochs", "1", "--image-size", "64", "--width-mult", "0.35",
            "--n-train", "4", "--n-val", "2", "--batch-size", "4"]
    result = runner.invoke(app, args + ["--out", str(tmp_path / "r"), "--resume"])
    assert result.exit_code == 2 and "nothing to resume" in result.stderr
    assert runner.invoke(app, args + ["--out", str(tmp_path / "r")]).exit_code == 0
    result = runner.invoke(app, args + ["--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--resume" in result.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, args + ["--out", str(blocker / "run")])
    assert result.exit_code == 2 and "cannot write to run directory" in result.stderr
    result = runner.invoke(app, args + ["--out", str(tmp_path / "r2"), "--data", "imagenet"])
    assert result.exit_code == 2 and "unknown --data" in result.stderr
    for flag, value in (("--augment", "heavy"), ("--optimizer", "lbfgs"), ("--amp", "fp8"), ("--device", "tpu")):
        result = runner.invoke(app, args + ["--out", str(tmp_path / "r2"), flag, value])
        assert result.exit_code == 2 and flag in result.output and value in result.output  # the choices are listed
        assert not (tmp_path / "r2").exists()


def test_schedule_warmup_hold_cosine():
    assert lr_factor(0.0, 0.1, 1 / 3) == pytest.approx(0.1)
    assert lr_factor(0.1, 0.1, 1 / 3) == pytest.approx(1.0)
    assert lr_factor(0.3, 0.1, 1 / 3) == 1.0
    assert lr_factor(2 / 3, 0.1, 1 / 3) == pytest.approx(0.5)
    assert lr_factor(1.0, 0.1, 1 / 3) == pytest.approx(0.0)


def test_ddp_two_processes_gloo(tmp_path, torchrun):
    proc = torchrun(
        ["-m", "ssdlite_model.cli", "train", "--preset", "tiny", "--epochs", "1", "--image-size", "64", "--width-mult",
         "0.35", "--n-train", "8", "--n-val", "4", "--batch-size", "2", "--out", str(tmp_path / "ddp")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(tmp_path / "ddp" / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 1 and state["step"] == 2  # 8 images / (2 per step x 2 processes)
    assert not any(k.startswith("module.") for k in state["model"])
    assert len(metrics(tmp_path / "ddp")) == 1 and proc.stdout.count("trained to epoch 1") == 1


def test_voc_tree_trains_with_ssd_augmentation_bf16_and_gradflow(tmp_path):
    from ssdaudit.training.gradflow import analyse_gradflow, read_gradflow_log

    assert runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "voc"), "--n", "8", "--image-size", "64"]).exit_code == 0
    s = settings(tmp_path / "r", data=f"voc:{tmp_path / 'voc'}", epochs=1, amp="bf16", gradflow=True, eval_every=1)
    trainer = Trainer(s, base_config=tiny())
    from torchvision.transforms import v2

    from ssdlite_model.data import Transformed

    # VOC data gets the strong SSD augmentation (zoom-out and IoU crop), and the network runs in bfloat16
    assert isinstance(trainer.train_set, Transformed)
    steps = {type(t) for t in trainer.train_set.transform.transforms}
    assert {v2.RandomZoomOut, v2.RandomIoUCrop} <= steps
    dtypes = set()
    trainer.model.extras[0].register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
    records = trainer.fit()
    assert torch.bfloat16 in dtypes
    assert records[0]["step"] == 2 and "map50" in records[0]  # 6 training images, batch 4
    run = read_gradflow_log(tmp_path / "r")
    assert len(run.steps) == 2
    assert not [f for f in analyse_gradflow(run)[0] if f.severity.value == "error"]


def test_time_budget_stops_early_and_clip_grad_clips(tmp_path, monkeypatch):
    import torch.nn as nn

    calls = []
    real = nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **kw):
        calls.append(max_norm)
        return real(params, max_norm, *a, **kw)

    monkeypatch.setattr(nn.utils, "clip_grad_norm_", spy)
    trainer = Trainer(settings(tmp_path / "r", epochs=50, clip_grad=0.5, time_budget_min=0.001), base_config=tiny())
    records = trainer.fit()
    assert 1 <= len(records) < 50 and trainer.elapsed >= 0.06  # stopped by the 0.06 s budget, not by the epochs
    assert calls and set(calls) == {0.5}


def test_best_pth_holds_the_best_epoch(tmp_path):
    import ssdlite_model.train as train_mod

    maps = iter([0.2, 0.5, 0.3])
    trainer = Trainer(settings(tmp_path / "r", epochs=3, eval_every=1), base_config=tiny())
    trainer.evaluate = lambda: {"map50": next(maps), "map50_11pt": 0.0, "coco_map": 0.0, "per_class": {}}
    trainer.fit()
    best = torch.load(tmp_path / "r" / train_mod.BEST, weights_only=True)
    assert best["epoch"] == 2 and best["metrics"]["map50"] == 0.5
    assert torch.load(tmp_path / "r" / CHECKPOINT, weights_only=True)["best_map"] == 0.5
