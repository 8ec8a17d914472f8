"""The `ssdaudit params` contract: JSON keys, exit codes, one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ssdaudit.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
TOP_KEYS = {
    "target", "registered_params", "trainable_params", "unregistered_params", "effective_params",
    "checkpoint_bytes", "checkpoint_bytes_if_fixed", "groups", "reference", "findings",
}
FINDING_KEYS = {"rule", "name", "severity", "path", "params", "modules", "message", "fix", "location"}

SMALL_BUGGY = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = [nn.Linear(4, 4) for _ in range(3)]
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x)

def example_input():
    return torch.rand(2, 4)
"""


def invoke(*args):
    return runner.invoke(app, list(args))


def test_json_contract_and_exit_1_on_error(tmp_path):
    f = tmp_path / "net.py"
    f.write_text(SMALL_BUGGY)
    result = invoke("params", str(f), "--format", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert TOP_KEYS <= set(data)
    finding, reload = [x for x in data["findings"] if x["severity"] == "error"]
    assert reload["rule"] == "R007" and "cause: R001 `blocks`" in reload["message"]  # the symptom, explained
    assert FINDING_KEYS <= set(finding)
    assert finding["rule"] == "R001" and finding["path"] == "blocks" and finding["params"] == 60
    assert finding["location"].endswith("net.py:8")
    assert data["registered_params"] == 10 and data["effective_params"] == 70


def test_fixed_example_against_reference_exits_0():
    result = invoke("params", str(ROOT / "examples/fixed_modulelist.py"), "--reference", "ssds-voc", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["reference"]["params"] == 4_577_792 and data["reference"]["difference"] == 0


def test_input_shape_and_strict(tmp_path):
    f = tmp_path / "t.py"
    f.write_text(
        "import torch\nfrom torch import nn\nclass T(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.lin = nn.Linear(4, 4)\n        self.scale = torch.ones(4)\n"
        "    def forward(self, x):\n        return self.lin(x) * self.scale\n"
    )
    assert invoke("params", str(f), "--input-shape", "2,4").exit_code == 0
    strict = invoke("params", str(f), "--input-shape", "2,4", "--strict", "--format", "json")
    assert strict.exit_code == 1
    assert [x["rule"] for x in json.loads(strict.stdout)["findings"] if x["severity"] == "warning"] == ["R004"]


def test_an_explicit_input_shape_wins_over_example_input(tmp_path):
    """--input-shape given on the command line is the probe input, not silently dropped for example_input()."""
    f = tmp_path / "shaped.py"
    f.write_text(
        "import torch\nfrom torch import nn\nSEEN = []\nclass T(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.lin = nn.Linear(4, 4)\n"
        "    def forward(self, x):\n        if x.shape[0] == 3:\n            raise ValueError('probed with batch 3')\n"
        "        return self.lin(x)\n"
        "def build_model():\n    return T()\ndef example_input():\n    return torch.rand(2, 4)\n"
    )
    default = invoke("params", str(f), "--format", "json")
    assert default.exit_code == 0 and not json.loads(default.stdout)["findings"], default.output
    shaped = invoke("params", str(f), "--input-shape", "3,4", "--format", "json")
    notes = [x for x in json.loads(shaped.stdout)["findings"] if x["rule"] == "N004"]
    assert notes and "probed with batch 3" in notes[0]["message"], shaped.output


@pytest.mark.parametrize("text", ["1,,3", "1,3,", "2x", "a,b", "0,4"])
def test_a_malformed_input_shape_is_refused(tmp_path, text):
    result = invoke("params", str(ROOT / "examples/fixed_modulelist.py"), "--input-shape", text)
    assert result.exit_code == 2 and "--input-shape" in result.stderr, result.output


def test_checkpoint_target_and_checkpoint_option(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    import buggy_plain_list

    model = buggy_plain_list.build_model()
    ckpt = tmp_path / "buggy.pth"
    torch.save(model.state_dict(), ckpt)
    result = invoke("params", str(ckpt), "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["checkpoint_bytes"] == ckpt.stat().st_size
    # The fixed model against the buggy checkpoint: the file lacks the backbone's 312 tensors.
    result = invoke("params", str(ROOT / "examples/fixed_modulelist.py"), "--checkpoint", str(ckpt), "--format", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)["checkpoint"]
    assert len(data["missing_keys"]) == 312 and data["missing_keys"][0].startswith("backbone.")


def test_meta_device(tmp_path):
    result = invoke("params", str(ROOT / "examples/buggy_plain_list.py"), "--device", "meta", "--format", "json")
    data = json.loads(result.stdout)
    assert result.exit_code == 1
    assert [f["params"] for f in data["findings"] if f["rule"] == "R001"] == [1_812_800]


BAD = {
    "missing": (None, "no such file"),
    "syntax": ("def broken(:\n", "syntax error"),
    "raises": ("def build_model():\n    raise RuntimeError('boom')\n", "the factory raised RuntimeError: boom"),
    "not_module": ("def build_model():\n    return 42\n", "not an nn.Module"),
    "ambiguous": ("from torch import nn\nclass A(nn.Module): pass\nclass B(nn.Module): pass\n", "several nn.Module classes (A, B)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_targets_exit_2_with_one_line(tmp_path, case):
    source, expected = BAD[case]
    f = tmp_path / f"{case}.py"
    if source is not None:
        f.write_text(source)
    result = invoke("params", str(f))
    assert result.exit_code == 2
    assert expected in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_unknown_reference_and_corrupt_checkpoint(tmp_path):
    result = invoke("params", str(ROOT / "examples/fixed_modulelist.py"), "--reference", "nope")
    assert result.exit_code == 2 and "unknown reference 'nope'" in result.stderr
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    result = invoke("params", str(bad))
    assert result.exit_code == 2 and "cannot read checkpoint" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_malicious_checkpoint_is_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, evil)
    result = invoke("params", str(evil))
    assert result.exit_code == 2 and not marker.exists()


def test_entry_point_runs_as_a_process():
    out = subprocess.run([sys.executable, "-m", "ssdaudit.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "params" in out.stdout
    ver = subprocess.run([sys.executable, "-m", "ssdaudit.cli", "--version"], capture_output=True, text=True)
    from importlib.metadata import version

    assert ver.stdout.strip() == f"ssdaudit {version('ssdaudit')}"  # the installed distribution, not a second constant


def test_builtin_references_and_depth(tmp_path):
    """--reference ssds-coco / torchvision-ssdlite count what those models hold; --depth groups one level deeper."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    fixed = str(ROOT / "examples" / "fixed_modulelist.py")
    data = json.loads(invoke("params", fixed, "--reference", "ssds-coco", "--format", "json", "--no-roundtrip").stdout)
    assert data["reference"]["params"] == 9_245_312 and data["reference"]["difference"] == 9_245_312 - 4_577_792
    tv = sum(p.numel() for p in ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).parameters())
    data = json.loads(invoke("params", fixed, "--reference", "torchvision-ssdlite", "--format", "json", "--no-roundtrip").stdout)
    assert data["reference"]["params"] == tv
    shallow = json.loads(invoke("params", fixed, "--format", "json", "--no-roundtrip").stdout)["groups"]
    deep = json.loads(invoke("params", fixed, "--format", "json", "--no-roundtrip", "--depth", "2").stdout)["groups"]
    assert {g["path"] for g in shallow} == {"backbone", "norm", "extras", "loc", "conf"}
    assert "backbone.0" in {g["path"] for g in deep} and sum(g["params"] for g in deep) == sum(g["params"] for g in shallow)


def test_rules_command():
    from ssdaudit.core.findings import RULES

    listing = invoke("rules")
    assert listing.exit_code == 0 and len(listing.stdout.strip().splitlines()) == len(RULES)
    one = invoke("rules", "r007")
    assert one.exit_code == 0 and RULES["R007"].fix in one.stdout and "docs/rules/R007.md" in one.stdout
    assert invoke("rules", "X123").exit_code == 2


def test_layers_table_splices_in_what_torchinfo_cannot_see():
    import torchinfo

    sys.path.insert(0, str(ROOT / "examples"))
    import buggy_plain_list

    blind = torchinfo.summary(buggy_plain_list.build_model(), input_data=[torch.rand(2, 3, 300, 300)], verbose=0)
    assert blind.total_params == 2_764_992  # torchinfo alone: the backbone is not there
    buggy = str(ROOT / "examples" / "buggy_plain_list.py")
    data = json.loads(invoke("params", buggy, "--layers", "--depth", "2", "--no-roundtrip", "--format", "json").stdout)
    rows = data["layers"]
    assert rows[0]["depth"] == 0 and rows[0]["params"] == 4_577_792  # the real total
    hidden = [r for r in rows if r["unregistered"] == "R001"]
    assert hidden[0]["path"] == "backbone" and hidden[0]["params"] == 1_812_800
    assert sum(r["params"] for r in hidden if r["depth"] == 2) == 1_812_800 and len(hidden) == 19
    assert any(r["path"] == "extras.0" and r["output_shape"] == [2, 512, 5, 5] for r in rows)  # torchinfo's shapes
    fixed = json.loads(invoke("params", str(ROOT / "examples" / "fixed_modulelist.py"), "--layers", "--no-roundtrip",
                              "--format", "json").stdout)["layers"]
    assert fixed[0]["params"] == 4_577_792 and not [r for r in fixed if r["unregistered"]]
    assert "layers" not in json.loads(invoke("params", buggy, "--no-roundtrip", "--format", "json").stdout)


def test_params_offers_the_trust_pickle_it_advises(tmp_path):
    """The refusal of a pickled model says "pass --trust-pickle": params must then take that flag."""
    path = tmp_path / "whole_model.pth"
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)), path)
    refused = invoke("params", str(path))
    assert refused.exit_code == 2 and "--trust-pickle" in refused.stderr, refused.output
    trusted = invoke("params", str(path), "--trust-pickle", "--format", "json")
    assert trusted.exit_code == 0, trusted.output
    assert json.loads(trusted.stdout)["registered_params"] == 3 * 4 + 4 + 4 * 2 + 2
    assert "weights_only=False" in trusted.stderr
    again = invoke("params", str(path))  # the trust does not outlive the command
    assert again.exit_code == 2
