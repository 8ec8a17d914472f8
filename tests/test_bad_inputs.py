"""Bad input never wins: hostile and careless inputs on every command give one line and exit 2 (never a traceback,
a hang, a silent pass or lost data). Each test is one class of input seen in the field."""

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ssdaudit.cli import app as audit_app
from ssdlite_model import tiny
from ssdlite_model.cli import app as lite_app
from ssdlite_model.train import BEST, CHECKPOINT, METRICS, Trainer, TrainSettings

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@contextlib.contextmanager
def within(seconds: float):
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""
    def expire(*_):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output, result.output
    lines = [x for x in result.stderr.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def settings(out, **kw):
    base = dict(data="synthetic", epochs=1, batch_size=4, lr=0.01, image_size=64, width_mult=0.35, n_train=8,
                n_val=4, out=str(out), progress=False, eval_every=1)
    base.update(kw)
    return TrainSettings(**base)


TRAIN_ARGS = ["--preset", "tiny", "--image-size", "64", "--width-mult", "0.35", "--n-train", "8", "--n-val", "4",
              "--batch-size", "4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    Trainer(settings(out), base_config=tiny()).fit()
    return out / CHECKPOINT


def save_variant(path: Path, trained: Path, **changes) -> Path:
    state = torch.load(trained, weights_only=True)
    for key, value in changes.items():
        if value is KeyError:
            state.pop(key)
        elif key == "config_update":
            state["config"] = {**state["config"], **value}
        else:
            state[key] = value
    torch.save(state, path)
    return path


# --- hangs: billion laughs, model code that never ends ---------------------------------------------------


def test_self_referencing_pickle_does_not_hang_any_reader(tmp_path):
    laugh = []
    for _ in range(60):
        laugh = [laugh, laugh]
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(3)}, good)
    bomb = tmp_path / "bomb.pth"
    torch.save({"state_dict": {"w": torch.ones(3)}, "junk": laugh}, bomb)
    size = bomb.stat().st_size
    assert size < 4096

    def audit(*args):
        result = runner.invoke(audit_app, [*map(str, args), "--format", "json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    with within(60):
        # every reader finds the one tensor under "state_dict" and reads the whole file, junk and all
        data = audit("params", bomb)
        assert (data["registered_params"], data["groups"], data["findings"]) == (3, [{"path": "(root)", "params": 3}], [])
        assert data["checkpoint_bytes"] == size
        data = audit("diff", good, bomb)
        assert data["identical"] is True and data["unchanged"] == ["w"] and data["findings"] == []
        assert data["b"] == {"path": str(bomb), "bytes": size, "tensors": 1, "params": 3, "tensor_bytes": 12,
                             "state_dict_key": "state_dict"}
        model = tmp_path / "m.py"
        model.write_text("import torch\nfrom torch import nn\nclass M(nn.Module):\n    def __init__(self):\n"
                         "        super().__init__()\n        self.w = nn.Parameter(torch.ones(3))\n"
                         "    def forward(self, x):\n        return x * self.w\n")
        data = audit("params", model, "--checkpoint", bomb, "--reference", bomb)
        assert (data["reference"]["params"], data["reference"]["difference"]) == (3, 0)
        checkpoint = data["checkpoint"]
        assert checkpoint["file_bytes"] == size and checkpoint["missing_keys"] == checkpoint["unexpected_keys"] == []
        assert checkpoint["shape_mismatch"] == [] and [f["rule"] for f in data["findings"]] == ["N003"]  # no example input
    cyclic = {}
    cyclic["model"] = cyclic
    torch.save(cyclic, tmp_path / "cycle.pth")
    with within(30):
        assert "no tensors" in one_line_error(runner.invoke(audit_app, ["params", str(tmp_path / "cycle.pth")]))
        result = runner.invoke(audit_app, ["params", str(tmp_path / "cycle.pth"), "--format", "json"])
        assert result.exit_code == 2 and json.loads(result.stdout)["error"]["kind"] == "load"


MODEL_TAIL = ("from torch import nn\nclass M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
              "        self.l = nn.Linear(4, 4)\n    def forward(self, x):\n{forward}\n"
              "def example_input():\n    return torch.rand(2, 4)\n")


def model_file(tmp_path, name, head="", forward="        return self.l(x)"):
    path = tmp_path / f"{name}.py"
    path.write_text("import sys\nimport torch\n" + head + MODEL_TAIL.format(forward=forward))
    return path


@pytest.mark.parametrize("code", [0, 3])
def test_model_file_that_exits_is_a_load_error_everywhere(tmp_path, code):
    path = model_file(tmp_path, f"exits{code}", head=f"sys.exit({code})\n")
    # the phase (building: importing the file), the file, the call with its code, and the fix
    why = (f"the model's code called sys.exit({code}); a model file must not end the process (move that call under "
           "`if __name__ == \"__main__\":`)")
    for command in ("params", "gradflow"):
        assert one_line_error(runner.invoke(audit_app, [command, str(path)])) == f"error: building {path}: {why}"
        result = runner.invoke(audit_app, [command, str(path), "--format", "json"])
        assert result.exit_code == 2, result.output
        assert json.loads(result.stdout) == {"error": {"message": f"building {path}: {why}", "kind": "load"}}
    cfg = tmp_path / "pyproject.toml"
    cfg.write_text(f'[tool.ssdaudit]\n[[tool.ssdaudit.models]]\ntarget = "{path.name}"\n')
    result = runner.invoke(audit_app, ["check", "--config", str(cfg), "--format", "json"])
    assert result.exit_code == 2, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is False and [(r["name"], r["status"]) for r in data["rows"]] == [(path.name, "error")]
    assert data["rows"][0]["details"] == [f"building {path.name}: {why}"] and data["new"] == []


def test_model_code_in_forward_that_exits_is_an_error(tmp_path):
    path = model_file(tmp_path, "fwd_exit", forward="        sys.exit(0)")
    assert "sys.exit" in one_line_error(runner.invoke(audit_app, ["params", str(path)]))


@pytest.mark.parametrize("where", ["import", "forward"])
def test_endless_model_code_stops_at_the_timeout(tmp_path, where):
    head = "while True:\n    pass\n" if where == "import" else ""
    forward = "        while True:\n            pass" if where == "forward" else "        return self.l(x)"
    path = model_file(tmp_path, f"loop_{where}", head=head, forward=forward)
    start = time.monotonic()
    with within(60):
        line = one_line_error(runner.invoke(audit_app, ["params", str(path), "--timeout", "2"]))
    assert time.monotonic() - start < 30
    assert "time limit of 2 s" in line and ("building" if where == "import" else "probing") in line


def test_gradflow_blames_build_optimizer_only_for_its_own_errors(tmp_path):
    """A bad --lr or the time limit is not "build_optimizer(model) raised" (the file has no build_optimizer)."""
    path = model_file(tmp_path, "plain")
    line = one_line_error(runner.invoke(audit_app, ["gradflow", str(path), "--lr", "-1"]))
    assert "--lr" in line and "build_optimizer" not in line
    looping = model_file(tmp_path, "loop_gradflow", forward="        while True:\n            pass")
    with within(60):
        line = one_line_error(runner.invoke(audit_app, ["gradflow", str(looping), "--timeout", "2"]))
    assert "time limit of 2 s" in line and "build_optimizer" not in line
    raising = model_file(tmp_path, "bad_opt", head="def build_optimizer(model):\n    raise ValueError('no lr')\n")
    line = one_line_error(runner.invoke(audit_app, ["gradflow", str(raising)]))
    assert "build_optimizer(model)" in line and "no lr" in line


def test_printing_model_keeps_json_stdout_clean(tmp_path):
    path = model_file(tmp_path, "chatty", head="print('model file loaded')\n",
                      forward="        print('forward!')\n        return self.l(x)")
    result = runner.invoke(audit_app, ["params", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["registered_params"] == 20
    assert "model file loaded" in result.stderr


# --- tracebacks that must be one line ----------------------------------------------------------------


@pytest.mark.parametrize("variant, expect", [
    ({"config": "ssds-voc"}, "config must be a dict"),
    ({"config_update": {"image_size": -5}}, "image_size"),
    ({"config_update": {"num_classes": 1e9}}, "num_classes must be an integer"),
    ({"config_update": {"num_classes": 10**9}}, "num_classes"),
    ({"model": {"w": "not a tensor"}}, "not a tensor"),
])
def test_ssdlite_commands_on_broken_checkpoints(tmp_path, trained, variant, expect):
    bad = save_variant(tmp_path / "bad.pth", trained, **variant)
    image = tmp_path / "x.png"
    from torchvision.io import write_png

    write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(image))
    for args in (["eval", str(bad), "--n-val", "2"], ["detect", str(bad), str(image), "--out", str(tmp_path / "d")],
                 ["export", str(bad), "--onnx", str(tmp_path / "m.onnx")]):
        with within(60):
            assert expect in one_line_error(runner.invoke(lite_app, args))


def test_ssdlite_commands_on_empty_and_hostile_checkpoints(tmp_path):
    empty = tmp_path / "last.pth"
    empty.write_bytes(b"")
    assert "empty" in one_line_error(runner.invoke(lite_app, ["eval", str(empty)]))

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    for proto in (2, 4):
        evil = tmp_path / f"evil{proto}.pth"
        evil.write_bytes(pickle.dumps({"model": Evil()}, protocol=proto))
        line = one_line_error(runner.invoke(lite_app, ["eval", str(evil)]))
        assert "refused" in line and "weights_only=False" not in line
    torch.save({"model": Evil(), "config": {}}, tmp_path / "evil_zip.pth")
    line = one_line_error(runner.invoke(lite_app, ["detect", str(tmp_path / "evil_zip.pth"), str(empty)]))
    assert "refused" in line and "posix.system" in line
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("missing", ["rng", "optimizer"])
def test_resume_from_a_checkpoint_without_training_state(tmp_path, trained, missing):
    run = tmp_path / "run"
    run.mkdir()
    save_variant(run / CHECKPOINT, trained, **{missing: KeyError})
    result = runner.invoke(lite_app, ["train", *TRAIN_ARGS, "--epochs", "2", "--out", str(run), "--resume", "--override"])
    assert missing in one_line_error(result)


def test_resume_from_an_empty_last_pth(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / CHECKPOINT).write_bytes(b"")
    assert "empty" in one_line_error(runner.invoke(lite_app, ["train", *TRAIN_ARGS, "--out", str(run), "--resume"]))


def test_check_and_params_configuration_mistakes(tmp_path):
    cfg = tmp_path / "pyproject.toml"
    cfg.write_text('[tool.ssdaudit]\n[[tool.ssdaudit.models]]\ntarget = "m.py"\ninput_shape = ["a", 3]\n')
    line = one_line_error(runner.invoke(audit_app, ["check", "--config", str(cfg)]))
    assert "input_shape" in line and "pyproject.toml:4" in line
    cfg.write_bytes(b'[tool.ssdaudit]\nlint = ["\xff\xfe"]\n')
    assert "UTF-8" in one_line_error(runner.invoke(audit_app, ["check", "--config", str(cfg)]))
    path = model_file(tmp_path, "m")
    line = one_line_error(runner.invoke(audit_app, ["params", str(path), "--input-shape", "100000000,100000"]))
    assert "GiB" in line


def test_shard_index_with_wrong_types_or_paths_outside(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    torch.save({"w": torch.ones(2)}, shards / "a.bin")
    index = shards / "pytorch_model.bin.index.json"
    other = tmp_path / "other.pth"
    torch.save({"w": torch.ones(2)}, other)
    for weight_map, expect in (([1, 2], "weight_map"), ({"w": "../other.pth"}, "outside"),
                               ({"w": "/etc/passwd"}, "outside"), ({"w": 3}, "weight_map")):
        index.write_text(json.dumps({"weight_map": weight_map}))
        assert expect in one_line_error(runner.invoke(audit_app, ["diff", str(other), str(shards)]))


def test_gradflow_index_with_wrong_types(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for index in ({"version": 2, "every": "x", "tensors": [], "stale_optimizer": []},
                  {"version": 2, "every": 1, "tensors": [1, 2], "stale_optimizer": []},
                  {"version": 2, "every": 1, "tensors": [], "stale_optimizer": "x"},
                  [1, 2, 3]):
        (run / "index.json").write_text(json.dumps(index))
        assert "not a gradflow index" in one_line_error(runner.invoke(audit_app, ["gradflow", str(run)]))


def test_training_on_broken_datasets(tmp_path):
    result = runner.invoke(lite_app, ["data", "synth", "--out", str(tmp_path / "voc"), "--n", "6", "--image-size", "64"])
    assert result.exit_code == 0, result.output
    xml = sorted((tmp_path / "voc").rglob("Annotations/*.xml"))[0]
    xml.write_text("<annotation><object>")
    args = ["train", *TRAIN_ARGS, "--data", f"voc:{tmp_path / 'voc'}", "--out", str(tmp_path / "r1")]
    assert "not well-formed XML" in one_line_error(runner.invoke(lite_app, args))
    images = tmp_path / "images"
    images.mkdir()
    ann = tmp_path / "ann.json"
    ann.write_text("[1, 2, 3]")
    args = ["train", *TRAIN_ARGS, "--data", f"coco:{images},{ann}", "--out", str(tmp_path / "r2")]
    assert "not a COCO instances file" in one_line_error(runner.invoke(lite_app, args))


def test_export_with_an_unusable_opset(tmp_path, trained):
    result = runner.invoke(lite_app, ["export", str(trained), "--onnx", str(tmp_path / "m.onnx"), "--opset", "1"])
    assert result.exit_code == 2 and "--opset" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_full_disk_during_training_and_write_mapped(tmp_path, monkeypatch, trained):
    def full(*_a, **_kw):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0: No space left on device")

    monkeypatch.setattr(torch, "save", full)
    result = runner.invoke(lite_app, ["train", *TRAIN_ARGS, "--epochs", "1", "--out", str(tmp_path / "r")])
    assert "cannot write checkpoint" in one_line_error(result)
    result = runner.invoke(audit_app, ["diff", str(trained), str(trained), "--write-mapped", str(tmp_path / "m.pth")])
    assert "cannot write" in one_line_error(result)
    assert not (tmp_path / "m.pth").exists() and not list(tmp_path.glob(".m.pth.*"))


# --- lost data ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dies_at, at_epoch", [(METRICS, 2), (BEST, 2), (CHECKPOINT, 2), (CHECKPOINT, 1)])
def test_a_kill_at_any_step_of_the_epoch_writes_loses_nothing(tmp_path, monkeypatch, dies_at, at_epoch):
    """The kill is simulated by raising inside the write path; resume must end with every metrics line once,
    best.pth present and last.pth at the final epoch. At epoch 1 the kill comes before the first last.pth: the
    folder holds metrics but nothing to load, and --resume must still finish the run (from epoch 0)."""
    import ssdlite_model.train as train_mod

    out = tmp_path / "run"
    real_save, real_append = train_mod.Trainer.save, train_mod.Trainer._append_metrics
    state = {"armed": True}

    def save(self, *names, metrics=None):
        if state["armed"] and dies_at in names and self.epoch == at_epoch:
            state["armed"] = False
            raise KeyboardInterrupt(f"killed while writing {dies_at}")
        return real_save(self, *names, metrics=metrics)

    def append(self, record):
        if state["armed"] and dies_at == METRICS and record["epoch"] == at_epoch:
            state["armed"] = False
            raise KeyboardInterrupt("killed while writing metrics")
        return real_append(self, record)

    monkeypatch.setattr(train_mod.Trainer, "save", save)
    monkeypatch.setattr(train_mod.Trainer, "_append_metrics", append)
    with pytest.raises(KeyboardInterrupt):
        Trainer(settings(out, epochs=3), base_config=tiny()).fit()
    Trainer(settings(out, epochs=3, resume=True), base_config=tiny()).fit()
    epochs = [json.loads(line)["epoch"] for line in (out / METRICS).read_text().splitlines()]
    assert epochs == [1, 2, 3]
    state_last = torch.load(out / CHECKPOINT, weights_only=True)
    assert state_last["epoch"] == 3
    best = torch.load(out / BEST, weights_only=True)
    assert best["metrics"]["map50"] == state_last["best_map"]


def test_real_sigkill_of_ssdlite_train_never_damages_the_run(tmp_path):
    """SIGKILL at a few instants of a real `ssdlite train`; each time, --resume finishes with consistent files."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ssdlite_model.cli", "train", *TRAIN_ARGS, "--n-train", "16", "--epochs", "4",
           "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for k, delay in enumerate((4.0, 5.5, 7.0)):
        proc = subprocess.Popen(cmd + (["--resume"] if any((out / n).exists() for n in (CHECKPOINT, BEST, METRICS)) else []), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (out / CHECKPOINT).exists():
            torch.load(out / CHECKPOINT, weights_only=True)  # always loadable
    final = subprocess.run(cmd + (["--resume"] if any((out / n).exists() for n in (CHECKPOINT, BEST, METRICS)) else []), env=env, capture_output=True,
                           text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    epochs = [json.loads(line)["epoch"] for line in (out / METRICS).read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]
    assert torch.load(out / CHECKPOINT, weights_only=True)["epoch"] == 4 and (out / BEST).exists()
    assert not list(out.glob(".*.tmp"))


def test_stale_temporary_files_are_removed_on_start(tmp_path, trained):
    run = tmp_path / "run"
    run.mkdir()
    (run / CHECKPOINT).write_bytes(trained.read_bytes())
    stale = run / ".last.pth.abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    result = runner.invoke(lite_app, ["train", *TRAIN_ARGS, "--out", str(run), "--resume"])
    assert result.exit_code == 0, result.output
    assert not stale.exists()


def test_fresh_run_refuses_a_folder_with_an_old_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / METRICS).write_text('{"epoch": 1}\n')
    line = one_line_error(runner.invoke(lite_app, ["train", *TRAIN_ARGS, "--out", str(run)]))
    assert "already holds a run" in line and "metrics.jsonl" in line
    assert (run / METRICS).read_text() == '{"epoch": 1}\n'


def test_detect_keeps_every_output_when_names_collide(tmp_path, trained):
    from torchvision.io import write_png

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_png(torch.zeros(3, 16, 16, dtype=torch.uint8), str(tmp_path / folder / "x.png"))
    out = tmp_path / "det"
    result = runner.invoke(lite_app, ["detect", str(trained), str(tmp_path / "a/x.png"), str(tmp_path / "b/x.png"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.png"))) == 2


# --- wrong or silent outcomes ------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", ["0", "-1"])
def test_time_budget_must_be_positive(tmp_path, budget):
    line = one_line_error(runner.invoke(lite_app, ["train", *TRAIN_ARGS, "--out", str(tmp_path / "r"), "--time-budget", budget]))
    assert "--time-budget" in line


def test_resume_keeps_stored_settings_and_refuses_changes(tmp_path):
    out = tmp_path / "run"
    first = runner.invoke(lite_app, ["train", *TRAIN_ARGS, "--epochs", "1", "--out", str(out)])
    assert first.exit_code == 0, first.output
    # the --help example: only --out and --resume; the stored image size, width and sizes are used
    result = runner.invoke(lite_app, ["train", "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    line = one_line_error(runner.invoke(lite_app, ["train", "--out", str(out), "--resume", "--n-train", "12", "--lr", "0.5"]))
    assert "--n-train 12 (stored: 8)" in line and "--lr 0.5" in line and "--override" in line
    result = runner.invoke(lite_app, ["train", "--out", str(out), "--resume", "--epochs", "2", "--override"])
    assert result.exit_code == 0, result.output
    assert "changes the learning-rate schedule" in result.stderr
    assert torch.load(out / CHECKPOINT, weights_only=True)["epoch"] == 2


def test_eval_rejects_an_unknown_format(trained):
    result = runner.invoke(lite_app, ["eval", str(trained), "--format", "xml"])
    assert result.exit_code == 2 and "xml" in result.output


# --- messages --------------------------------------------------------------------------------------------


def test_divergence_in_the_first_epoch_does_not_point_at_a_missing_checkpoint(tmp_path):
    from ssdlite_model.train import Diverged

    trainer = Trainer(settings(tmp_path / "r", epochs=1), base_config=tiny())
    real = trainer.criterion.forward
    trainer.criterion.forward = lambda *a: {**real(*a), "loss": torch.tensor(float("nan"))}
    with pytest.raises(Diverged, match="no checkpoint was written yet"):
        trainer.fit()


def test_mixed_dict_checkpoint_message(tmp_path):
    torch.save({"w": torch.ones(2), "epoch": 3, "note": "x"}, tmp_path / "mixed.pth")
    line = one_line_error(runner.invoke(audit_app, ["params", str(tmp_path / "mixed.pth")]))
    assert "mixes 1 tensors with 2 other values" in line


def test_truncated_metrics_line_on_resume_is_named_and_dropped(tmp_path):
    out = tmp_path / "run"
    Trainer(settings(out, epochs=1), base_config=tiny()).fit()
    with open(out / METRICS, "a") as f:
        f.write('{"epoch": 2, "lo')  # a kill in the middle of the next line
    result = runner.invoke(lite_app, ["train", "--out", str(out), "--resume", "--epochs", "2", "--override"])
    assert result.exit_code == 0, result.output
    assert f"{out / METRICS}:2" in result.stderr
    assert [json.loads(x)["epoch"] for x in (out / METRICS).read_text().splitlines()] == [1, 2]


def test_json_errors_are_a_document_on_stdout(tmp_path):
    result = runner.invoke(audit_app, ["params", str(tmp_path / "missing.py"), "--format", "json"])
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["error"]["kind"] == "load" and "no such file" in doc["error"]["message"]


def test_unexpected_errors_are_one_line_with_a_debug_hint(tmp_path, monkeypatch):
    import ssdaudit.registration.params as params

    def broken(*_a, **_kw):
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr(params, "audit_params", broken)
    monkeypatch.delenv("SSDAUDIT_RAISE_INTERNAL")  # the user's view, not the test suite's
    path = model_file(tmp_path, "m")
    result = runner.invoke(audit_app, ["params", str(path)])
    assert result.exit_code == 3  # never 2 (a refusal) nor 1 (findings)
    line = one_line_error(result, code=3)
    assert line.startswith("error: internal error: ZeroDivisionError: a bug of ours") and "--debug" in line
    assert "please report it" in line
    doc = json.loads(runner.invoke(audit_app, ["params", str(path), "--format", "json"]).stdout)
    assert doc["error"]["kind"] == "internal" and "ZeroDivisionError" in doc["error"]["message"]


def test_internal_errors_raise_under_the_test_suite(tmp_path, monkeypatch):
    import ssdaudit.registration.params as params

    def broken(*_a, **_kw):
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr(params, "audit_params", broken)
    with pytest.raises(ZeroDivisionError):
        runner.invoke(audit_app, ["params", str(model_file(tmp_path, "m"))])


# --- permissions -----------------------------------------------------------------------------------------


def test_atomic_writes_have_the_umask_mode(tmp_path):
    from ssdaudit.core.io import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "report.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_random_bytes_are_not_called_a_pickle_of_objects(tmp_path):
    """A damaged file is said to be damaged; the advice to pass --trust-pickle never comes back with --trust-pickle."""
    import random

    rng = random.Random(0)
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(2)}, good)
    for k in range(6):
        bad = tmp_path / f"r{k}.pth"
        bad.write_bytes(bytes(rng.randrange(256) for _ in range(300)))
        for extra in ([], ["--trust-pickle"]):
            result = runner.invoke(audit_app, ["diff", str(bad), str(good), "--format", "json", *extra])
            assert result.exit_code == 2, result.output
            error = json.loads(result.stdout)["error"]
            assert error["kind"] == "load" and str(bad) in error["message"], error
            if extra:
                assert "pass --trust-pickle" not in error["message"], error
