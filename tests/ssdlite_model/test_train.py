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


def assert_states_equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, (path, len(data))


def test_checkpoint_contents_and_eval_record(tmp_path):
    import dataclasses

    from ssdlite_model.checkpoint import config_from_dict
    from ssdlite_model.detector import SSDLite
    from ssdlite_model.evaluate import evaluate_model

    s = settings(tmp_path / "r", epochs=1, eval_every=1)
    trainer = Trainer(s, base_config=tiny())
    records = trainer.fit()
    state = torch.load(tmp_path / "r" / CHECKPOINT, weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "step", "rng", "config", "settings"} <= set(state)
    assert state["epoch"] == 1 and state["step"] == 3  # 12 images, batch 4
    assert state["scheduler"] == {"step": 3, "elapsed": trainer.elapsed, "total_steps": 3}
    # the weights and optimizer state are the trained model's, not the initial ones
    assert_states_equal(state["model"], trainer.model.state_dict())
    initial = Trainer(s, base_config=tiny()).model.state_dict()
    assert not torch.equal(state["model"]["conf.0.weight"], initial["conf.0.weight"])
    momentum = trainer.optimizer.state_dict()["state"]
    assert sorted(state["optimizer"]["state"]) == sorted(momentum) and momentum
    for i, buffers in momentum.items():
        assert torch.equal(state["optimizer"]["state"][i]["momentum_buffer"], buffers["momentum_buffer"])
    assert config_from_dict(state["config"]) == trainer.config and state["config"]["num_classes"] == 4
    assert state["settings"] == dataclasses.asdict(s)
    # no weight decay on BatchNorm parameters and biases
    opt = state["optimizer"]["param_groups"]
    assert opt[0]["weight_decay"] == 1e-4 and opt[1]["weight_decay"] == 0.0
    # the eval record: consistent with itself, written to metrics.jsonl and the checkpoint, and the evaluation of
    # the weights the checkpoint holds
    (record,) = records
    assert (record["epoch"], record["step"], len(record["losses"])) == (1, 3, 3)
    assert record["loss"] == pytest.approx(sum(record["losses"]) / 3, rel=1e-12)
    per_class = record["per_class"]
    assert set(per_class) <= set(trainer.config.class_names) and per_class
    assert record["map50"] == pytest.approx(sum(per_class.values()) / len(per_class), rel=1e-12)
    assert all(0.0 <= record[k] <= 1.0 for k in ("map50", "map50_11pt", "coco_map"))
    assert metrics(tmp_path / "r") == [json.loads(json.dumps(record))]
    assert state["metrics"] == record and state["best_map"] == record["map50"]
    model = SSDLite(config_from_dict(state["config"]))
    model.load_state_dict(state["model"])
    again = evaluate_model(model, trainer.val_set, s.eval_batch_size).to_dict()
    assert {k: again[k] for k in ("map50", "map50_11pt", "coco_map")} == {
        k: record[k] for k in ("map50", "map50_11pt", "coco_map")}
    assert {k: v["ap50"] for k, v in again["per_class"].items()} == per_class
    assert_png(tmp_path / "r" / "training.png")


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
    from ssdaudit.training.gradflow.log import GRAD_NORM, LR, WEIGHT

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
    # the tree's train/val split and labels.txt
    assert (len(trainer.train_set), len(trainer.val_set)) == (6, 2)
    assert trainer.config.class_names == ("circle", "square", "triangle") and trainer.config.num_classes == 4
    records = trainer.fit()
    assert torch.bfloat16 in dtypes
    (record,) = records
    assert record["step"] == 2 and len(record["losses"]) == 2  # 6 training images, batch 4
    assert all(torch.isfinite(torch.tensor(record["losses"])))
    per_class = record["per_class"]
    assert per_class and set(per_class) <= set(trainer.config.class_names)
    assert record["map50"] == pytest.approx(sum(per_class.values()) / len(per_class), rel=1e-12)
    assert all(0.0 <= record[k] <= 1.0 for k in ("map50", "map50_11pt", "coco_map"))
    # the network ran in bfloat16, the weights it keeps and saves stay float32
    state = torch.load(tmp_path / "r" / CHECKPOINT, weights_only=True)
    assert_states_equal(state["model"], trainer.model.state_dict())
    assert {t.dtype for k, t in state["model"].items() if not k.endswith("num_batches_tracked")} == {torch.float32}
    run = read_gradflow_log(tmp_path / "r")
    assert run.steps.tolist() == [1, 2]
    trainable = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert [t.name for t in run.tensors] == list(trainable)
    assert all(t.registered and t.in_optimizer and t.reached for t in run.tensors)
    grad_norm, weight_norm, lr = (run.stats[:, field, :] for field in (GRAD_NORM, WEIGHT, LR))
    assert torch.isfinite(torch.from_numpy(grad_norm)).all()
    # some heads get no gradient in a step without positives or mined negatives there, but all flows through the stem
    assert (grad_norm[:, list(trainable).index("backbone.0.0.weight")] > 0).all()
    assert lr[-1] == pytest.approx(record["lr"], rel=1e-6)
    # the last step's weight norms are those of the weights the checkpoint holds
    saved = [float(state["model"][name].norm()) for name in trainable]
    assert weight_norm[-1].tolist() == pytest.approx(saved, rel=1e-4)
    assert not [f for f in analyse_gradflow(run)[0] if f.severity.value == "error"]


def test_time_budget_stops_early_and_clip_grad_clips(tmp_path, monkeypatch):
    import torch.nn as nn

    calls = []
    real = nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **kw):
        norm = real(params, max_norm, *a, **kw)
        calls.append((max_norm, norm))
        return norm

    monkeypatch.setattr(nn.utils, "clip_grad_norm_", spy)
    trainer = Trainer(settings(tmp_path / "r", epochs=50, clip_grad=0.5, time_budget_min=0.001), base_config=tiny())
    # gradients scaled as under fp16 AMP (a GradScaler works on the CPU too): clipping must see them unscaled
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    clipped = []  # the gradient norm the optimizer steps with

    def before_step(optimizer, *_):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        clipped.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    trainer.optimizer.register_step_pre_hook(before_step)
    records = trainer.fit()
    assert 1 <= len(records) < 50 and trainer.elapsed >= 0.06  # stopped by the 0.06 s budget, not by the epochs
    assert calls and {max_norm for max_norm, _ in calls} == {0.5}
    assert len(clipped) == len(calls) == trainer.step  # no step skipped for overflow
    unscaled = [float(norm) for _, norm in calls]  # clip_grad_norm_ returns the norm it found, before clipping
    assert max(unscaled) > 0.5  # so clipping had work to do
    for found, stepped in zip(unscaled, clipped):
        # the optimizer sees at most max_norm: max_norm itself when the (unscaled) norm was larger, else untouched
        assert stepped <= 0.5 * (1 + 1e-5)
        assert stepped == pytest.approx(min(found, 0.5), rel=1e-4), (found, stepped)


def test_best_pth_holds_the_best_epoch(tmp_path):
    import ssdlite_model.train as train_mod

    maps = iter([0.2, 0.5, 0.3])
    trainer = Trainer(settings(tmp_path / "r", epochs=3, eval_every=1), base_config=tiny())
    trainer.evaluate = lambda: {"map50": next(maps), "map50_11pt": 0.0, "coco_map": 0.0, "per_class": {}}
    trainer.fit()
    best = torch.load(tmp_path / "r" / train_mod.BEST, weights_only=True)
    assert best["epoch"] == 2 and best["metrics"]["map50"] == 0.5
    assert torch.load(tmp_path / "r" / CHECKPOINT, weights_only=True)["best_map"] == 0.5
