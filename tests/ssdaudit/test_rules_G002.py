"""G002 by evidence, not by whether a loss was given. A trainable module that ran in forward but gets no gradient is
an error with any loss, the cut named (``.detach()``, ``.data`` and a NumPy round trip, ``torch.tensor(t)``, a
``no_grad`` block); a module forward never calls is a warning; a forward that returns a scalar returns the loss.
Each with a clean twin."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ssdaudit import Severity
from ssdaudit.cli import app
from ssdaudit.core.findings import Finding
from ssdaudit.training.gradflow.pipeline import gradflow_target

runner = CliRunner()

DETACHED = '''
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        features = self.backbone(x){cut}
        return self.head(features)


def build_model():
    return Net()


def example_input():
    return torch.rand(2, 3, 16, 16)
'''

CBOW = '''
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class CBOW(nn.Module):
    """word2vec CBOW: the context embeddings summed, a linear layer over the vocabulary; forward returns the loss."""

    def __init__(self, vocab=50, dim=8):
        super().__init__()
        self.embeddings = nn.Embedding(vocab, dim)
        self.linear = nn.Linear(dim, vocab)

    def forward(self, context, target):
        embeds = self.embeddings(context)
        {summed}
        return F.nll_loss(F.log_softmax(self.linear(summed), dim=-1), target)


def build_model():
    return CBOW()


def example_input():
    return torch.randint(0, 50, (4, 6)), torch.randint(0, 50, (4,))
'''
NUMPY_ROUND_TRIP = "summed = torch.tensor(np.sum(embeds.data.numpy(), axis=1))"
IN_GRAPH = "summed = embeds.sum(dim=1)"

COPIED = '''
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        {body}
        return self.head(h)


def build_model():
    return Net()


def example_input():
    return torch.rand(3, 4)
'''


def g002(tmp_path: Path, source: str, name: str = "model.py") -> list[Finding]:
    path = tmp_path / name
    path.write_text(source)
    return [f for f in gradflow_target(str(path), steps=2, timeout=0).findings if f.rule == "G002"]


def test_detached_backbone_without_compute_loss_is_an_error_naming_the_cut(tmp_path: Path) -> None:
    (f,) = g002(tmp_path, DETACHED.format(cut=".detach()"))
    assert f.path == "backbone" and f.severity is Severity.ERROR and f.params == 8 * 3 * 9 + 8
    assert ".detach() of the output of `backbone`" in f.message and "model.py:13" in f.message


def test_detached_backbone_cli_exit_1_and_clean_twin_exit_0(tmp_path: Path) -> None:
    bad, good = tmp_path / "bad.py", tmp_path / "good.py"
    bad.write_text(DETACHED.format(cut=".detach()"))
    good.write_text(DETACHED.format(cut=""))
    result = runner.invoke(app, ["gradflow", str(bad), "--steps", "2", "--format", "json"])
    assert result.exit_code == 1, result.output
    found = [(f["rule"], f["path"], f["severity"]) for f in json.loads(result.stdout)["findings"]]
    assert found == [("G002", "backbone", "error")]
    result = runner.invoke(app, ["gradflow", str(good), "--steps", "2", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["findings"] == []


def test_cbow_numpy_round_trip_in_a_forward_that_returns_the_loss(tmp_path: Path) -> None:
    (f,) = g002(tmp_path, CBOW.format(summed=NUMPY_ROUND_TRIP))
    assert f.path == "embeddings" and f.severity is Severity.ERROR
    assert ".data of the output of `embeddings`" in f.message and "np.sum(embeds.data.numpy()" in f.message
    assert g002(tmp_path, CBOW.format(summed=IN_GRAPH), "clean.py") == []


def test_tensor_copied_from_another_tensor_is_named(tmp_path: Path) -> None:
    (f,) = g002(tmp_path, COPIED.format(body="h = torch.tensor(self.encoder(x))"))
    assert f.path == "encoder" and f.severity is Severity.ERROR and "torch.tensor() of the output of `encoder`" in f.message
    (f,) = g002(tmp_path, COPIED.format(body="with torch.no_grad():\n            h = self.encoder(x)"), "nograd.py")
    assert f.path == "encoder" and f.severity is Severity.ERROR and "`encoder` ran under torch.no_grad()" in f.message
    assert g002(tmp_path, COPIED.format(body="h = self.encoder(x).clone()"), "clean.py") == []


def test_module_never_called_is_a_warning_saying_how_to_pass_the_loss(tmp_path: Path) -> None:
    source = COPIED.format(body="h = x").replace("self.head = nn.Linear(4, 2)", "self.head = nn.Linear(4, 2)\n        self.aux = nn.Linear(4, 4)")
    found = {f.path: f for f in g002(tmp_path, source)}
    assert set(found) == {"encoder", "aux"}
    assert all(f.severity is Severity.WARNING and "forward never calls" in f.message
               and "find_unused_parameters" in f.message and "compute_loss(output)" in f.message for f in found.values())


def test_forward_returning_the_loss_is_no_guess(tmp_path: Path) -> None:
    # an unused layer beside a forward that returns the loss: a warning that says forward returns the loss
    source = CBOW.format(summed=IN_GRAPH).replace("self.linear = nn.Linear(dim, vocab)",
                                                  "self.linear = nn.Linear(dim, vocab)\n        self.spare = nn.Linear(dim, dim)")
    path = tmp_path / "m.py"
    path.write_text(source)
    report = gradflow_target(str(path), steps=2, timeout=0)
    assert report.run.loss_guessed is False
    (f,) = [f for f in report.findings if f.rule == "G002"]
    assert f.path == "spare" and f.severity is Severity.WARNING and "forward returns the loss" in f.message
