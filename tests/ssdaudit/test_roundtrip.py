"""R007: the save-reload round trip catches state that does not travel, whatever the cause; each with a clean twin."""

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from ssdaudit.cli import app
from ssdaudit.registration.roundtrip import check_roundtrip

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))
X = torch.rand(3, 4)
runner = CliRunner()


def r007(build, x=X):
    found = check_roundtrip(build, x)
    assert all(f.rule == "R007" for f in found)
    return found


class RandomScale(nn.Module):
    def __init__(self, as_buffer=False):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        scale = random.random() + 0.5
        if as_buffer:
            self.register_buffer("scale", torch.tensor(scale))
        else:
            self.scale = scale

    def forward(self, x):
        return self.lin(x) * self.scale


def test_python_float_drawn_at_random():
    (f,) = r007(RandomScale)
    assert f.path == "<model>" and "`scale` (float)" in f.message
    assert r007(lambda: RandomScale(as_buffer=True)) == []


class NumpyTable(nn.Module):
    def __init__(self, as_buffer=False):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        table = np.random.rand(4).astype(np.float32)
        if as_buffer:
            self.register_buffer("table", torch.from_numpy(table))
        else:
            self.table = table

    def forward(self, x):
        return self.lin(x) + torch.as_tensor(self.table)


def test_numpy_array_attribute():
    (f,) = r007(NumpyTable)
    assert "`table` (ndarray)" in f.message
    assert r007(lambda: NumpyTable(as_buffer=True)) == []


class LearnedStat(nn.Module):
    """A non-persistent buffer whose value is learned from data in training: it is lost on reload."""

    def __init__(self, persistent=False):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("center", torch.zeros(4), persistent=persistent)

    def forward(self, x):
        if self.training:
            self.center.copy_(x.mean(0))
        return self.lin(x - self.center)


def test_non_persistent_buffer_with_learned_values():
    (f,) = r007(LearnedStat)
    assert f.path == "lin" and "`center` (buffer kept out of state_dict())" in f.message
    assert r007(lambda: LearnedStat(persistent=True)) == []


class Lazy(nn.Module):
    def __init__(self, eager=False):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        if eager:
            self.register_buffer("running", torch.zeros(4))

    def forward(self, x):
        if not hasattr(self, "running"):
            self.register_buffer("running", torch.zeros(4))
        if self.training:
            self.running.copy_(x.mean(0))
        return self.lin(x) + self.running


def test_lazily_created_buffer():
    (f,) = r007(Lazy)
    assert "created lazily" in f.message and "running" in f.message
    assert r007(lambda: Lazy(eager=True)) == []


class DropsKey(nn.Module):
    def __init__(self, drop=True):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.bias2 = nn.Parameter(torch.randn(4))
        self.drop = drop

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        if self.drop:
            state.pop("bias2", None)
        return state

    def load_state_dict(self, state, strict=True, assign=False):
        return super().load_state_dict(state, strict=False, assign=assign)

    def forward(self, x):
        return self.lin(x) + self.bias2


def test_state_dict_override_that_drops_a_key():
    (f,) = r007(DropsKey)
    assert "bias2" in f.message and "kept out of state_dict()" in f.message
    assert r007(lambda: DropsKey(drop=False)) == []


def test_seed_story_r007_at_backbone_caused_by_r001():
    import buggy_plain_list
    import fixed_modulelist

    x = torch.rand(2, 3, 300, 300)
    (f,) = check_roundtrip(buggy_plain_list.build_model, x)
    assert f.path == "backbone" and "first module whose output differs: `backbone.0" in f.message
    assert "cause: R001 `backbone` (1,812,800 parameters" in f.message
    assert check_roundtrip(fixed_modulelist.build_model, x) == []


def test_params_cli_runs_the_round_trip_and_can_skip_it():
    buggy = str(ROOT / "examples/buggy_plain_list.py")
    data = json.loads(runner.invoke(app, ["params", buggy, "--format", "json"]).stdout)
    rules = [f["rule"] for f in data["findings"] if f["severity"] == "error"]
    assert rules == ["R001", "R007"]
    data = json.loads(runner.invoke(app, ["params", buggy, "--format", "json", "--no-roundtrip"]).stdout)
    assert [f["rule"] for f in data["findings"] if f["severity"] == "error"] == ["R001"]
    fixed = runner.invoke(app, ["params", str(ROOT / "examples/fixed_modulelist.py"), "--format", "json"])
    assert fixed.exit_code == 0 and not [f for f in json.loads(fixed.stdout)["findings"] if f["rule"] in ("R007", "R008")]


def test_pytest_fixture_assert_reloads(ssdaudit):
    ssdaudit.assert_reloads(lambda: RandomScale(as_buffer=True), X)
    with pytest.raises(pytest.fail.Exception, match="R007"):
        ssdaudit.assert_reloads(RandomScale, X)


def test_r007_names_a_plain_random_tensor_as_its_likely_cause(tmp_path):
    """A plain tensor of random values read in forward: the reload keeps the new build's values. R007 says which
    tensor (R004), as it names a container for R001 (found by a new-user trial: it named only `<model>`)."""
    from ssdaudit.registration.pipeline import audit_target

    path = tmp_path / "m.py"
    path.write_text("import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
                    "        super().__init__()\n        self.fc = nn.Linear(8, 8)\n        self.bias2 = torch.randn(8)\n\n"
                    "    def forward(self, x):\n        return self.fc(x) + self.bias2.to(x.device)\n\n\n"
                    "def example_input():\n    return torch.rand(2, 8)\n")
    r007 = [f for f in audit_target(str(path)).findings if f.rule == "R007"]
    assert len(r007) == 1 and "likely cause: R004 `bias2`" in r007[0].message
