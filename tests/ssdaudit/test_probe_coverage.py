"""Class: probe coverage on real models. A model built on the meta device whose forward cannot run there for a
meta-only reason (``.item()``, a data-dependent shape) is probed on a CPU copy with random weights when it fits the
memory budget (``--probe-device auto``), so R004/R005/R008 still run; the report says where the probe ran and why.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from ssdaudit import find_unregistered

from ssdaudit.cli.main import app
from ssdaudit.core.errors import UsageError
from ssdaudit.core.findings import Severity
from ssdaudit.registration.pipeline import audit_target
from ssdaudit.registration.probe_device import meta_reason, parse_memory

# forward calls .item() (fails on meta); the scale table is read in a helper that forward's own source never names,
# so only a forward pass that really runs can see the plain tensor (R004)
ITEM_MODEL = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        {scale}

    def rescale(self, y):
        return y * self.scale

    def forward(self, x):
        steps = int((x > 0.5).sum().item()) % 3 + 1
        y = self.fc(x)
        for _ in range(steps):
            y = self.rescale(y)
        return y


def example_input():
    return torch.rand(2, 4)
'''
BUGGY = "self.scale = torch.ones(4)  # a plain tensor: .to() and state_dict() miss it"
CLEAN = 'self.register_buffer("scale", torch.ones(4))'

# a data-dependent shape: boolean-mask indexing has no meta kernel
MASK_MODEL = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        return y[y > 0].sum() + y.mean()


def example_input():
    return torch.rand(2, 4)
'''


def _file(tmp_path: Path, text: str, name: str = "model.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def _alarms(report) -> list:
    return [f for f in report.findings if f.severity is not Severity.INFO]


def test_item_on_meta_falls_back_to_cpu_and_finds_the_plain_tensor(tmp_path):
    target = _file(tmp_path, ITEM_MODEL.format(scale=BUGGY))
    report = audit_target(target, device="meta", probe_device="auto", roundtrip=False)
    assert report.probe is not None and report.probe.device == "cpu"
    assert report.probe.reason == "meta failed: .item() on a meta tensor"
    assert [f.path for f in report.findings if f.rule == "R004"] == ["scale"]
    assert not [f for f in report.findings if f.rule == "N004"]  # the probe ran in both modes, on the CPU copy


def test_meta_only_probe_misses_it_and_says_so(tmp_path):
    target = _file(tmp_path, ITEM_MODEL.format(scale=BUGGY))
    report = audit_target(target, device="meta", probe_device="meta", roundtrip=False)
    assert report.probe is not None and report.probe.device == "meta"
    assert ".item() on a meta tensor" in report.probe.reason
    assert not [f for f in report.findings if f.rule == "R004"]
    n004 = [f for f in report.findings if f.rule == "N004"]
    # the input is fine: the note names the device as the cause and the option that fixes it, not the input
    assert n004 and all("--probe-device auto or cpu" in f.message for f in n004)


def test_clean_twin_falls_back_and_gives_no_findings(tmp_path):
    target = _file(tmp_path, ITEM_MODEL.format(scale=CLEAN))
    report = audit_target(target, device="meta", probe_device="auto", roundtrip=False)
    assert report.probe is not None and report.probe.device == "cpu"
    assert _alarms(report) == []
    assert report.registered_params == 20


def test_data_dependent_shape_falls_back(tmp_path):
    target = _file(tmp_path, MASK_MODEL)
    report = audit_target(target, device="meta", probe_device="auto", roundtrip=False)
    assert report.probe is not None
    assert (report.probe.device, report.probe.reason) == ("cpu", "meta failed: a data-dependent shape")
    assert _alarms(report) == []


def test_over_budget_stays_on_meta_and_forced_cpu_is_refused(tmp_path):
    target = _file(tmp_path, ITEM_MODEL.format(scale=BUGGY))
    report = audit_target(target, device="meta", probe_device="auto", probe_memory=16, roundtrip=False)
    assert report.probe is not None and report.probe.device == "meta"
    assert "over the 16 bytes budget" in report.probe.reason
    with pytest.raises(UsageError, match="--probe-device cpu: .* over the budget of 16 bytes"):
        audit_target(target, device="meta", probe_device="cpu", probe_memory=16, roundtrip=False)
    forced = audit_target(target, device="meta", probe_device="cpu", roundtrip=False)
    assert forced.probe is not None and forced.probe.device == "cpu"
    assert [f.path for f in forced.findings if f.rule == "R004"] == ["scale"]


def test_a_model_that_probes_on_meta_stays_there(tmp_path):
    target = _file(tmp_path, ITEM_MODEL.format(scale=CLEAN).replace("int((x > 0.5).sum().item()) % 3 + 1", "2"))
    report = audit_target(target, device="meta", probe_device="auto", roundtrip=False)
    assert report.probe is not None and (report.probe.device, report.probe.reason) == ("meta", "built there")
    assert report.bytes_exact is False  # still the meta model: no CPU copy was made


def test_cli_reports_the_probe_device_in_text_and_json(tmp_path):
    target = _file(tmp_path, ITEM_MODEL.format(scale=BUGGY))
    runner = CliRunner()
    text = runner.invoke(app, ["params", target, "--device", "meta", "--no-roundtrip"])
    assert "probe: cpu (meta failed: .item() on a meta tensor)" in text.output
    out = runner.invoke(app, ["params", target, "--device", "meta", "--no-roundtrip", "--format", "json"])
    doc = json.loads(out.output)
    assert doc["probe"] == {"device": "cpu", "reason": "meta failed: .item() on a meta tensor"}
    refused = runner.invoke(app, ["params", target, "--probe-device", "meta"])
    assert refused.exit_code == 2 and "--probe-device meta needs --device meta" in refused.output
    bad = runner.invoke(app, ["params", target, "--device", "meta", "--probe-memory", "lots"])
    assert bad.exit_code == 2 and "bad --probe-memory" in bad.output
    idle = runner.invoke(app, ["params", target, "--probe-memory", "1KB"])  # a CPU build has no copy to bound
    assert idle.exit_code == 2 and "--probe-memory" in idle.output and "--device meta" in idle.output


def test_memory_sizes_and_reasons():
    assert parse_memory("4GiB") == 4 * 2**30
    assert parse_memory("512MB") == 512 * 10**6
    assert parse_memory("1.5g") == int(1.5 * 2**30)
    assert parse_memory("auto") is None
    for bad in ("", "-1G", "4 parsecs", "0"):
        with pytest.raises(UsageError):
            parse_memory(bad)
    assert meta_reason("RuntimeError: Tensor.item() cannot be called on meta tensors") == ".item() on a meta tensor"
    assert meta_reason("NotImplementedError: aten::bincount: ... no fake impl or Meta kernel registered") == \
        "an operator without a meta kernel"
    assert meta_reason("ValueError: shapes do not match") == "ValueError: shapes do not match"


class _Full(nn.Module):
    def __init__(self, proj):
        super().__init__()
        self.proj = proj
        self.dropout = nn.Dropout(0.1)  # mode-dependent, but registered from the swap on: .eval() reaches it

    def forward(self, x):
        return self.dropout(self.proj(x))


class _SwapsAttention(nn.Module):
    """Switches its attention implementation on the first forward, as Hugging Face's BigBird does for short inputs
    (a case the CPU fallback brings into reach): ``reuse`` keeps the registered projection, else a new one."""

    def __init__(self, reuse: bool):
        super().__init__()
        self.attn = _Full(nn.Linear(4, 4))
        self.reuse = reuse

    def forward(self, x):
        if x.shape[1] < 8:  # too short for the sparse kernel
            self.attn = _Full(self.attn.proj if self.reuse else nn.Linear(4, 4))
        return self.attn(x)


def test_a_module_swapped_in_forward_around_registered_parameters_hides_nothing():
    x = torch.rand(2, 4)
    clean = [f for f in find_unregistered(_SwapsAttention(reuse=True), x) if f.severity is not Severity.INFO]
    assert clean == []
    buggy = [f for f in find_unregistered(_SwapsAttention(reuse=False), x) if f.rule == "R005"]
    assert [(f.path, f.params, f.severity) for f in buggy] == [("attn", 20, Severity.ERROR)]
