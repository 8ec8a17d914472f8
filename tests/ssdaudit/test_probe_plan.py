"""The probe plan (``registration.plan``): one fallback for a meta-built model whose forward fails on meta, the
same findings whichever entry point runs it (library, CLI, pytest fixture), and its outcome as evidence
(``ProbeStatus``), never read back from a finding's message."""

import json
import textwrap

import torch
from torch import nn
from typer.testing import CliRunner

from ssdaudit.cli import app
from ssdaudit.gate.pytest_plugin import Auditor
from ssdaudit.registration.evidence import ProbeStatus
from ssdaudit.registration.params import audit_params
from ssdaudit.registration.plan import ProbeOptions, probe_plan
from ssdaudit.registration.unregistered import find_unregistered

runner = CliRunner()

MODEL = textwrap.dedent("""
    import torch
    from torch import nn


    class ItemOnMeta(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.heads = [nn.Linear(4, 4), nn.Linear(4, 4)]  # R001
            self.scale = torch.ones(4)  # R004: a plain tensor forward reads

        def forward(self, x):
            if x.sum().item() > -1e9:  # .item(): fails on the meta device, runs on the CPU
                x = self.body(x)
            for head in self.heads:
                x = head(x)
            return x * self.scale


    def build():
        return ItemOnMeta()


    def example_input():
        return torch.rand(2, 4)
""")


class CleanItemOnMeta(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum().item() > -1e9:
            x = self.body(x)
        return x


def _key(f):
    f = f if isinstance(f, dict) else f.to_dict()
    return (f["rule"], f["path"], f["severity"], f["params"], f["message"])


def _meta_model(tmp_path):
    path = tmp_path / "item_on_meta.py"
    path.write_text(MODEL)
    namespace: dict = {}
    exec(compile(MODEL, str(path), "exec"), namespace)
    with torch.device("meta"):
        model = namespace["build"]()
    return path, model, namespace["example_input"]().to("meta")


def test_library_cli_and_fixture_agree_on_a_meta_model_whose_forward_fails_on_meta(tmp_path):
    path, model, x = _meta_model(tmp_path)
    library = find_unregistered(model, x)
    report = audit_params(model, example_input=x)
    fixture = Auditor().findings(model, x)
    result = runner.invoke(app, ["params", f"{path}:build", "--device", "meta", "--format", "json",
                                 "--no-lint-source", "--no-roundtrip"])
    assert result.exit_code == 1, result.output
    cli = json.loads(result.stdout)
    assert cli["probe"]["device"] == "cpu" and cli["probe"]["reason"].startswith("meta failed: .item()")
    rules = {f.rule for f in library}
    assert {"R001", "R004"} <= rules and "N004" not in rules  # the fallback ran the probe: R004 needs it
    assert {_key(f) for f in report.findings} == {_key(f) for f in cli["findings"]}
    assert {_key(f) for f in library} <= {_key(f) for f in cli["findings"]}
    assert {_key(f) for f in fixture} == {_key(f) for f in cli["findings"] if f["severity"] == "error"}
    assert report.probe_status is not None and report.probe_status.device == "placeholder"


def test_clean_twin_is_clean_everywhere(tmp_path):
    with torch.device("meta"):
        model = CleanItemOnMeta()
    x = torch.rand(2, 4, device="meta")
    assert [f for f in find_unregistered(model, x) if f.severity.value != "info"] == []
    assert Auditor().findings(model, x) == []


def test_status_says_where_the_probe_ran_and_why_meta_failed(tmp_path):
    _, model, x = _meta_model(tmp_path)
    stays = probe_plan(model, x, ProbeOptions("meta"))
    assert stays.status.device == "meta" and not stays.status.ran
    assert stays.status.failure is not None and "item" in stays.status.failure
    assert [m for m, _ in stays.status.failures] == ["train", "eval"]
    note = [f for f in stays.findings if f.rule == "N004"]
    assert len(note) == 1 and note[0].message.endswith("(on the meta device: --probe-device auto or cpu runs it on a "
                                                       "CPU copy with random weights)")
    moved = probe_plan(model, x)
    assert moved.status == ProbeStatus("placeholder", ("train", "eval"), ())
    assert moved.sizes_from is model and moved.model is not model


def test_status_of_a_cpu_model_and_of_no_input():
    model = CleanItemOnMeta()
    ran = probe_plan(model, torch.rand(2, 4))
    assert ran.status == ProbeStatus("cpu", ("train", "eval"), ()) and ran.status.ran and ran.model is model
    skipped = probe_plan(model, None)
    assert skipped.status == ProbeStatus.skipped() and not skipped.status.attempted and not skipped.status.ran
    assert [f.rule for f in skipped.findings] == ["N003"] and skipped.placement.device == "none"


def test_findings_are_frozen():
    import dataclasses

    import pytest

    finding = find_unregistered(CleanItemOnMeta(), None)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.message = "changed"  # type: ignore[misc]
