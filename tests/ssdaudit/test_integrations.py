"""Lightning, Hugging Face Trainer and TensorBoard: a real 3-step training with each library, tiny models on the
CPU; the model with an unregistered layer is caught, its fixed twin is clean."""

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from ssdaudit.cli import app

runner = CliRunner()


class Body(nn.Module):
    def __init__(self, registered: bool):
        super().__init__()
        layers = [nn.Linear(4, 4), nn.Linear(4, 4)]
        self.layers = nn.ModuleList(layers) if registered else layers
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return self.head(x)


def _data(n=12):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)


# --- Lightning ------------------------------------------------------------------------------------------


def _lightning_fit(registered: bool, callbacks, max_steps=3):
    L = pytest.importorskip("lightning")

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.body = Body(registered)

        def training_step(self, batch, _idx):
            x, y = batch
            return nn.functional.mse_loss(self.body(x), y)  # a submodule called directly, not self(x)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(Module(), loader)
    return trainer


def test_lightning_gradflow_callback(tmp_path):
    from ssdaudit.training.gradflow import read_gradflow_log
    from ssdaudit.integrations.lightning import GradFlowCallback

    cb = GradFlowCallback(log_dir=tmp_path / "log", fail_on=())
    _lightning_fit(False, [cb])
    g001 = [f for f in cb.findings if f.rule == "G001"]
    assert [(f.path, f.params) for f in g001] == [("body", 40)]
    assert len(read_gradflow_log(tmp_path / "log").steps) == 3  # the log `ssdaudit gradflow RUN_DIR` renders
    clean = GradFlowCallback()
    _lightning_fit(True, [clean])
    assert [f for f in clean.findings if f.severity.value == "error"] == []


def test_lightning_callback_stops_the_run_and_params_audit_fails_fast():
    from ssdaudit.integrations.lightning import GradFlowCallback, ParamsAudit

    cb = GradFlowCallback(fail_on=("G001",))
    trainer = _lightning_fit(False, [cb], max_steps=20)
    assert trainer.global_step < 20  # stopped after the first step's findings
    with pytest.raises(RuntimeError, match="R001"):
        _lightning_fit(False, [ParamsAudit()])
    _lightning_fit(True, [ParamsAudit()])


# --- Hugging Face Trainer ---------------------------------------------------------------------------------


def test_transformers_trainer_callback(tmp_path):
    transformers = pytest.importorskip("transformers")
    from ssdaudit.integrations.transformers import GradFlowCallback

    class Regressor(nn.Module):
        def __init__(self, registered):
            super().__init__()
            self.body = Body(registered)

        def forward(self, x, labels=None):
            out = self.body(x)
            return {"loss": nn.functional.mse_loss(out, labels), "logits": out}

    x, y = _data()
    rows = [{"x": x[i], "labels": y[i]} for i in range(len(x))]
    found = {}
    for registered in (False, True):
        args = transformers.TrainingArguments(output_dir=str(tmp_path / str(registered)), max_steps=3,
                                              per_device_train_batch_size=4, report_to=[], use_cpu=True,
                                              save_strategy="no", logging_strategy="no", disable_tqdm=True,
                                              remove_unused_columns=False)
        cb = GradFlowCallback(fail_on=())
        transformers.Trainer(model=Regressor(registered), args=args, train_dataset=rows, callbacks=[cb]).train()
        found[registered] = [(f.rule, f.path) for f in cb.findings if f.severity.value == "error"]
    assert found[False] == [("G001", "body")] and found[True] == []


# --- TensorBoard -------------------------------------------------------------------------------------------


def test_tensorboard_from_the_monitor_and_from_a_log(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ssdaudit import GradFlowMonitor

    model = Body(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    from ssdaudit.integrations.tensorboard import TensorBoardSink

    with GradFlowMonitor(model, opt, log_dir=tmp_path / "log", sinks=[TensorBoardSink(tmp_path / "tb")]):
        for _ in range(3):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"grad_norm/layers.0", "grad_norm/head", "update_ratio/head"} <= scalars
    assert "update_ratio/layers.0" not in scalars  # never applied: no update ratio to plot
    assert len(events.Scalars("grad_norm/head")) == 3
    text = events.Tensors("ssdaudit/findings/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "G001" in text
    result = runner.invoke(app, ["gradflow", str(tmp_path / "log"), "--tensorboard", str(tmp_path / "tb2"),
                                 "--format", "json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["findings"][0]["rule"] == "G001"
    again = EventAccumulator(str(tmp_path / "tb2"))
    again.Reload()
    assert len(again.Scalars("grad_norm/layers.0")) == 3


# --- the training doctor in the frameworks ------------------------------------------------------------------


def _lightning_doctor(bug: bool, accumulate: int):
    L = pytest.importorskip("lightning")
    from ssdaudit.integrations.lightning import DoctorCallback

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

        def training_step(self, batch, _idx):
            x, y = batch
            out = self.body(x)
            return nn.functional.cross_entropy(out.softmax(1) if bug else out, y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(32) % 3
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    cb = DoctorCallback()
    L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[cb], accumulate_grad_batches=accumulate).fit(Module(), loader)
    return [f.rule for f in cb.findings if f.severity.value in ("error", "warning")]


def test_lightning_doctor_callback_names_the_bug_and_allows_accumulation():
    assert _lightning_doctor(True, 1) == ["T009"]
    assert _lightning_doctor(False, 2) == []  # accumulate_grad_batches is deliberate


def test_transformers_doctor_callback_names_the_bug_and_allows_accumulation(tmp_path):
    transformers = pytest.importorskip("transformers")
    from ssdaudit.integrations.transformers import DoctorCallback

    class Regressor(nn.Module):
        def __init__(self, bug):
            super().__init__()
            self.body, self.bug = Body(True), bug

        def forward(self, x, labels=None):
            out = self.body(x)  # (N, 1)
            return {"loss": nn.functional.mse_loss(out if self.bug else out.squeeze(1), labels), "logits": out}

    x, y = _data(16)
    rows = [{"x": x[i], "labels": y[i, 0]} for i in range(len(x))]  # labels (N,)
    found = {}
    for bug in (True, False):
        args = transformers.TrainingArguments(output_dir=str(tmp_path / str(bug)), max_steps=2,
                                              per_device_train_batch_size=4, gradient_accumulation_steps=2,
                                              report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no",
                                              disable_tqdm=True, remove_unused_columns=False)
        cb = DoctorCallback()
        transformers.Trainer(model=Regressor(bug), args=args, train_dataset=rows, callbacks=[cb]).train()
        found[bug] = [f.rule for f in cb.findings if f.severity.value in ("error", "warning")]
    assert found == {True: ["T010"], False: []}
