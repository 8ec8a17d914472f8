"""Every lint rule module runs its registry examples; every fix round-trips (imports, params clean, nothing else
changed, idempotent); the seed's model is fixed by `lint --fix`."""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ssdaudit.core.findings import RULES, Severity
from ssdaudit.lint.engine import apply_edits, lint_paths
from ssdaudit.lint.registry import CHECKS, fixable

ROOT = Path(__file__).resolve().parents[2]
FIX_CASES = ROOT / "tests" / "data" / "lint" / "fix"
HEADER = ("import torch\nimport torch.nn.functional as F\nfrom torch import nn\nfrom torch.cuda.amp import GradScaler\n"
          "from torch.nn.parallel import DistributedDataParallel as DDP\n"
          "from torch.optim.lr_scheduler import CosineAnnealingLR, StepLR\n\n\n"
          "class Block(nn.Module):\n    pass\n\n\n")


def example_source(code: str, text: str) -> str:
    """A registry example as a file: loop rules (L) run as a script; the others inside an nn.Module class, lines
    before the first ``def`` in ``__init__``, and a forward() that reads every attribute they assign."""
    if code.startswith("L") or code == "E999":
        return HEADER + text + ("\n    pass\n" if text.rstrip().endswith(":") else "\n")
    lines = [line for line in text.splitlines() if line.strip() != "..."]
    first_def = next((i for i, line in enumerate(lines) if line.startswith("def ")), len(lines))
    init, methods = lines[:first_def], lines[first_def:]
    body = ["class Net(nn.Module):", "    def __init__(self, channels=(1, 2), d=4, k=2, n=3, device='cpu'):",
            "        super().__init__()"] + ["        " + line for line in init]
    body += ["    " + line for line in methods]
    if not any(line.startswith("def forward") for line in methods):
        attrs = sorted(set(re.findall(r"self\.(\w+)\s*=", "\n".join(init))))
        body += ["    def forward(self, x):", f"        return ({''.join(f'self.{a}, ' for a in attrs)}x)"]
    return HEADER + "\n".join(body) + "\n"


def lint_text(tmp_path: Path, name: str, source: str) -> list[tuple[str, Severity]]:
    path = tmp_path / name
    path.write_text(source)
    return [(f.rule, f.severity) for f in lint_paths([path]).findings]


@pytest.mark.parametrize("code", sorted(CHECKS) + ["E999"])
def test_registry_examples_run_through_the_engine(code, tmp_path):
    rule = RULES[code]
    bad = lint_text(tmp_path, "bad.py", example_source(code, rule.bad_example))
    assert (code, rule.severity) in bad, f"{code}'s bad_example is not found: {bad}\n{example_source(code, rule.bad_example)}"
    good = lint_text(tmp_path, "good.py", example_source(code, rule.good_example))
    assert [f for f in good if f[1] is not Severity.INFO] == [], f"{code}'s good_example is flagged: {good}"


def test_rule_modules_are_named_after_their_registry_entries():
    for code, module in CHECKS.items():
        assert Path(module.__file__).stem == f"{code.lower()}_{RULES[code].name.replace('-', '_')}"
        assert "lint" in RULES[code].found_by
        assert callable(module.check)
    static = {code for code, rule in RULES.items() if rule.static} - {"E999"}
    assert static == set(CHECKS), "a rule found by lint needs its module in ssdaudit/lint/rules/"
    assert {"R001", "R002", "R003", "R004", "R005", "R009"} <= fixable()


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runtime(path: Path, name: str) -> list[tuple[str, Severity]]:
    from ssdaudit.registration.unregistered import find_unregistered

    m = _load(path, name)
    return [(f.rule, f.severity) for f in find_unregistered(m.build_model(), m.example_input())]


@pytest.mark.parametrize("case", sorted(p.name for p in FIX_CASES.glob("*.py")))
def test_fix_round_trip(case, tmp_path):
    code = case.split("_")[0].upper()
    path = tmp_path / case
    shutil.copy(FIX_CASES / case, path)
    original = path.read_text()
    before = lint_paths([path]).findings
    assert before and {f.rule for f in before} == {code} and all(f.autofix is not None for f in before)
    assert _runtime(path, f"before_{path.stem}") != [], "the case is a bug at runtime too"
    unsafe = code == "R005"
    result = lint_paths([path], fix=True, unsafe_fixes=unsafe)
    assert result.fixed == len({f.autofix.edits for f in before if f.autofix is not None})
    assert result.findings == [] and result.changed == [str(path)]
    fixed = path.read_text()
    assert _runtime(path, f"after_{path.stem}") == [], "ssdaudit params still finds something after the fix"
    # nothing changed outside the fixed statements
    spans = [(e.line, e.end_line) for f in before if f.autofix is not None for e in f.autofix.edits]
    changed = set()
    for group in difflib.SequenceMatcher(None, original.splitlines(), fixed.splitlines()).get_opcodes():
        tag, i1, i2 = group[0], group[1], group[2]
        if tag != "equal":
            changed |= set(range(i1 + 1, max(i2, i1 + 1) + 1))
    outside = sorted(n for n in changed if not any(a <= n <= b for a, b in spans))
    assert outside == [] and changed
    # idempotent: a second run finds and changes nothing
    again = lint_paths([path], fix=True, unsafe_fixes=unsafe)
    assert again.fixed == 0 and path.read_text() == fixed


def test_unsafe_fixes_wait_for_the_flag(tmp_path):
    path = tmp_path / "m.py"
    shutil.copy(FIX_CASES / "r005_functional.py", path)
    result = lint_paths([path], fix=True)
    assert result.fixed == 0 and [f.rule for f in result.findings] == ["R005", "R005"]
    assert all(f.autofix is not None and not f.autofix.safe for f in result.findings)


def test_diff_writes_nothing_and_shows_the_fix(tmp_path):
    path = tmp_path / "m.py"
    shutil.copy(FIX_CASES / "r002_params.py", path)
    before = path.read_text()
    result = lint_paths([path], fix=True, write=False)
    assert path.read_text() == before
    assert "+        self.scales = nn.ParameterList([nn.Parameter(torch.ones(4)) for _ in range(2)])" in result.diff


def test_overlapping_fixes_wait_for_the_next_round():
    text = "abcdef\n"
    from ssdaudit.core.findings import Edit, Fix

    first = Fix("a", True, (Edit(1, 2, 1, 4, "X"),))
    second = Fix("b", True, (Edit(1, 3, 1, 5, "Y"),))
    assert apply_edits(text, [first, second]) == ("aXdef\n", 1)
    assert apply_edits(text, [first, first]) == ("aXdef\n", 1)


def test_noqa_suppresses_like_ssdaudit_ignore(tmp_path):
    src = ("import torch\nfrom torch import nn\n\nclass M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
           "        self.a = [nn.Linear(2, 2)]  # noqa: R001\n"
           "        self.b = [nn.Linear(2, 2)]  # noqa: E501, R001\n"
           "        self.c = [nn.Linear(2, 2)]  # noqa: R002\n"
           "        self.d = [nn.Linear(2, 2)]  # noqa\n")
    path = tmp_path / "m.py"
    path.write_text(src)
    result = lint_paths([path])
    assert [(f.rule, f.location.line if f.location else 0) for f in result.findings] == [("R001", 9), ("R001", 10)]
    assert result.suppressed == 2


def test_sarif_results_carry_fixes(tmp_path):
    from ssdaudit.render.sarif import render_sarif

    path = tmp_path / "m.py"
    shutil.copy(FIX_CASES / "r009_moved.py", path)
    doc = json.loads(render_sarif(lint_paths([path]).findings, "0"))
    (result,) = doc["runs"][0]["results"]
    (fix,) = result["fixes"]
    (replacement,) = fix["artifactChanges"][0]["replacements"]
    assert replacement["insertedContent"]["text"] == "nn.Parameter(torch.ones(4).double())"
    assert replacement["deletedRegion"] == {"startLine": 9, "startColumn": 18, "endLine": 9, "endColumn": 54}
    assert result["locations"][0]["physicalLocation"]["region"]["endLine"] == 9


def test_seed_model_fixed_by_lint_fix(tmp_path):
    """`ssdaudit lint --fix` on a copy of the seed's buggy model gives the fixed model: params 4,577,792, no error."""
    copy = tmp_path / "buggy_plain_list.py"
    shutil.copy(ROOT / "examples" / "buggy_plain_list.py", copy)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-W", "ignore", "-m", "ssdaudit.cli.main"]
    fixed = subprocess.run(run + ["lint", "--fix", str(copy), "ssdlite_model", "--exclude", "ssdlite_model"],
                           capture_output=True, text=True, cwd=ROOT, env=env)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "self.backbone = torch.nn.ModuleList(blocks)" in copy.read_text()
    params = subprocess.run(run + ["params", str(copy), "--format", "json"], capture_output=True, text=True,
                            cwd=ROOT, env=env)
    report = json.loads(params.stdout)
    assert params.returncode == 0, params.stdout[-2000:] + params.stderr[-2000:]
    assert report["registered_params"] == 4_577_792
    assert [f for f in report["findings"] if f["severity"] == "error"] == []


def test_registry_says_which_rules_have_a_fix():
    """The registry entry documents the fix (and its safety) exactly where the rule's module has one."""
    assert {code for code, rule in RULES.items() if rule.autofix} == set(fixable())


def test_cli_diff_and_fix(tmp_path):
    """`lint --diff` prints the diff, writes nothing and exits 1; `lint --fix` writes it and exits 0 when nothing
    is left; the pre-commit hooks offer both."""
    from typer.testing import CliRunner

    from ssdaudit.cli import app

    path = tmp_path / "m.py"
    shutil.copy(FIX_CASES / "r003_namespace.py", path)
    before = path.read_text()
    shown = CliRunner().invoke(app, ["lint", str(path), "--diff"])
    assert shown.exit_code == 1 and "+        self.heads = nn.ModuleDict(dict(" in shown.stdout
    assert path.read_text() == before
    fixed = CliRunner().invoke(app, ["lint", str(path), "--fix"])
    assert fixed.exit_code == 0, fixed.stdout
    assert "0 findings in 1 file; 1 fixed in 1 file" in fixed.stdout
    assert CliRunner().invoke(app, ["lint", str(path), "--diff"]).exit_code == 0
    hooks = (ROOT / ".pre-commit-hooks.yaml").read_text()
    assert "id: ssdaudit-lint-fix" in hooks and "entry: ssdaudit lint --fix" in hooks


IMPORT_STYLES = {
    "from torch import nn": ("nn.Linear", "nn.ModuleList("),
    "from torch import nn as tnn": ("tnn.Linear", "tnn.ModuleList("),
    "import torch.nn as nn": ("nn.Linear", "nn.ModuleList("),
    "import torch": ("torch.nn.Linear", "torch.nn.ModuleList("),
    "import torch as th": ("th.nn.Linear", "th.nn.ModuleList("),
    "import torch.nn": ("torch.nn.Linear", "torch.nn.ModuleList("),
    "from torch.nn import Linear, Module": ("Linear", None),  # nothing binds torch.nn: no fix, never a NameError
}


@pytest.mark.parametrize("imports", list(IMPORT_STYLES))
def test_a_fix_names_torch_nn_the_way_the_file_imports_it(tmp_path, imports):
    """A fix writes the container through a name the file binds, or offers no fix: the fixed file always imports."""
    from typer.testing import CliRunner

    from ssdaudit.cli import app
    from ssdaudit.registration.unregistered import find_unregistered

    linear, wrapper = IMPORT_STYLES[imports]
    base = "Module" if linear == "Linear" else linear.rsplit(".", 1)[0] + ".Module"
    source = (f"{imports}\n\n\nclass Net({base}):\n    def __init__(self):\n        super().__init__()\n"
              f"        self.layers = [{linear}(4, 4), {linear}(4, 4)]  # keep this comment\n\n"
              f"    def forward(self, x):\n        for layer in self.layers:\n            x = layer(x)\n        return x\n")
    path = tmp_path / "net.py"
    path.write_text(source)
    result = CliRunner().invoke(app, ["lint", str(path), "--fix"])
    fixed = path.read_text()
    if wrapper is None:
        assert fixed == source and result.exit_code == 1  # reported, left as it was
        return
    assert result.exit_code == 0, result.output
    # run only in order (x = layer(x)): the fix picks nn.Sequential, named the same way as ModuleList would be
    sequential = wrapper.replace("ModuleList(", "Sequential(")
    assert f"self.layers = {sequential}{linear}(4, 4), {linear}(4, 4))" in fixed and "# keep this comment" in fixed
    namespace: dict = {}
    exec(compile(fixed, str(path), "exec"), namespace)  # imports and defines without a NameError
    assert [f.rule for f in find_unregistered(namespace["Net"]()) if f.severity.value == "error"] == []


def test_r004_fix_keeps_random_tensors_and_skips_scalars(tmp_path):
    """``torch.randn(8)`` is not a constant: its buffer must be saved (persistent, an unsafe fix: state_dict() gains
    a key), or a reloaded model computes with other values. ``torch.tensor(1e-5)`` is 0-dim: forward uses it safely
    (params: N005), so lint does not flag it (both found by a new-user trial)."""
    path = tmp_path / "m.py"
    path.write_text(
        "import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.noise = torch.randn(8)\n        self.zeros = torch.zeros(8)\n"
        "        self.eps = torch.tensor(1e-5)\n\n    def forward(self, x):\n"
        "        return (x + self.noise + self.zeros) / (x.std() + self.eps)\n")
    findings = {f.message.split()[0]: f for f in lint_paths([path]).findings}
    assert set(findings) == {"self.noise", "self.zeros"}
    noise, zeros = findings["self.noise"].autofix, findings["self.zeros"].autofix
    assert noise is not None and not noise.safe and "persistent=True" in noise.edits[0].text
    assert zeros is not None and zeros.safe and "persistent=False" in zeros.edits[0].text


def test_a_local_container_handed_to_a_registering_one_is_not_flagged(tmp_path):
    """The clean twins of r001_locals.py: the local list goes into nn.ModuleList / nn.Sequential(*...), or the name
    is rebound to a registering container before self.attr = name."""
    path = tmp_path / "m.py"
    path.write_text(
        "import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        layers = []\n        for _ in range(2):\n"
        "            layers.append(nn.Linear(4, 4))\n        self.layers = nn.ModuleList(layers)\n"
        "        seq = [nn.Linear(4, 4)]\n        self.seq = nn.Sequential(*seq)\n        self.alias = seq\n"
        "        heads = {}\n        heads['cls'] = nn.Linear(4, 3)\n        heads = nn.ModuleDict(heads)\n"
        "        self.heads = heads\n\n    def forward(self, x):\n"
        "        for layer in self.layers:\n            x = layer(x)\n        return self.heads['cls'](self.seq(x))\n")
    assert lint_paths([path]).findings == []
