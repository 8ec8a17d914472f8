"""One target parser for every command: files (Windows drive letters too), modules, library models, checkpoints."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ssdaudit.cli import app
from ssdaudit.core.errors import LoadError
from ssdaudit.core.targets import TargetSpec

runner = CliRunner()


@pytest.mark.parametrize("text, kind, path, name", [
    ("model.py", "file", "model.py", None),
    ("src/model.py:build", "file", "src/model.py", "build"),
    ("C:\\models\\m.py", "file", "C:\\models\\m.py", None),
    ("C:\\models\\m.py:Net", "file", "C:\\models\\m.py", "Net"),
    ("C:/models/m.py:Net", "file", "C:/models/m.py", "Net"),
    ("pkg.models:build", "module", "pkg.models", "build"),
    ("torchvision:resnet50", "library", "torchvision", "resnet50"),
    ("timm:convnext_tiny", "library", "timm", "convnext_tiny"),
    ("hf:bert", "library", "hf", "bert"),
    ("run/last.pth", "checkpoint", "run/last.pth", None),
    ("C:\\run\\model.safetensors", "checkpoint", "C:\\run\\model.safetensors", None),
])
def test_parse(text, kind, path, name):
    spec = TargetSpec.parse(text)
    assert (spec.kind, spec.path, spec.name) == (kind, path, name)
    assert spec.file == (path if kind == "file" else None)


@pytest.mark.parametrize("text", ["", "   ", "torchvision:"])
def test_parse_refuses_empty_targets(text):
    with pytest.raises(LoadError):
        TargetSpec.parse(text)


def test_resolved_against_a_root(tmp_path):
    (tmp_path / "m.py").write_text("")
    spec = TargetSpec.parse("m.py:Net").resolved(tmp_path)
    assert spec.path == str(tmp_path / "m.py") and spec.name == "Net" and spec.text == f"{tmp_path / 'm.py'}:Net"
    assert TargetSpec.parse("pkg.mod:X").resolved(tmp_path).path == "pkg.mod"
    assert TargetSpec.parse("missing.py").resolved(tmp_path).path == "missing.py"


def test_a_library_model_is_audited_in_one_command():
    import torchvision

    result = runner.invoke(app, ["params", "torchvision:resnet18", "--no-roundtrip", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    expected = sum(p.numel() for p in torchvision.models.resnet18().parameters())
    assert doc["registered_params"] == expected == 11_689_512
    assert doc["findings"] == [] or all(f["severity"] == "info" for f in doc["findings"])


def test_a_library_model_on_the_meta_device_allocates_nothing():
    result = runner.invoke(app, ["params", "torchvision:mobilenet_v2", "--device", "meta", "--no-roundtrip",
                                 "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["registered_params"] == 3_504_872


def test_an_unknown_library_model_names_the_closest():
    result = runner.invoke(app, ["params", "torchvision:resnet1", "--format", "json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "load" and "resnet18" in error["message"]


def test_a_missing_library_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm" or name.startswith("timm."):
            raise ModuleNotFoundError("No module named 'timm'", name="timm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    result = runner.invoke(app, ["params", "timm:convnext_tiny", "--format", "json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "load" and "pip install timm" in error["message"]


def test_hugging_face_model_type_on_meta():
    pytest.importorskip("transformers")
    result = runner.invoke(app, ["params", "hf:bert", "--device", "meta", "--no-roundtrip", "--format", "json"])
    assert result.exit_code == 0, result.output
    from transformers import AutoConfig, AutoModel
    import torch

    with torch.device("meta"):
        expected = sum(p.numel() for p in AutoModel.from_config(AutoConfig.for_model("bert")).parameters())
    assert json.loads(result.stdout)["registered_params"] == expected


@pytest.mark.parametrize("name", ["t5", "vit", "whisper"])
def test_hugging_face_models_get_their_own_kind_of_input(name):
    """An encoder-decoder (T5 needs decoder_input_ids), an image model (ViT takes pixel_values) and a speech model
    (Whisper takes log-mel input_features and decoder ids) run the probe."""
    pytest.importorskip("transformers")
    result = runner.invoke(app, ["params", f"hf:{name}", "--device", "meta", "--no-roundtrip", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["probe"]["device"] in ("meta", "cpu")
    assert not [f for f in doc["findings"] if f["rule"] in ("N003", "N004")]  # the forward ran in both modes


def test_gradflow_and_check_read_targets_the_same_way(tmp_path):
    """`C:`-style and `file.py:NAME` targets point SARIF at the file, not at a mangled prefix."""
    model = tmp_path / "m.py"
    model.write_text("import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
                     "        super().__init__()\n        self.layers = [nn.Linear(4, 4)]\n\n    def forward(self, x):\n"
                     "        return self.layers[0](x)\n\n\ndef example_input():\n    return torch.randn(2, 4)\n")
    result = runner.invoke(app, ["gradflow", f"{model}:Net", "--steps", "1", "--format", "sarif"])
    assert result.exit_code == 1, result.output
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in json.loads(result.stdout)["runs"][0]["results"]}
    assert uris and all(u.endswith("m.py") for u in uris), uris
