"""Linter classes seen on public code: each with the bug and its clean twin, on minimal models written here."""

import json
from pathlib import Path

from typer.testing import CliRunner

from ssdaudit.cli import app
from ssdaudit.lint.engine import lint_paths

runner = CliRunner()
HEAD = "import torch\nfrom torch import nn\n\n"


def lint(tmp_path: Path, source: str, name: str = "m.py", extra: dict[str, str] | None = None):
    for other, text in (extra or {}).items():
        (tmp_path / other).write_text(text)
    path = tmp_path / name
    path.write_text(HEAD + source)
    return [(f.rule, f.severity.value, f.location.line) for f in lint_paths([tmp_path]).findings
            if f.location.path == str(path)]


def test_parameter_moved_after_wrapping(tmp_path):
    bug = lint(tmp_path, "class M(nn.Module):\n    def __init__(self, device='cuda'):\n        super().__init__()\n"
                         "        self.w = nn.Parameter(torch.empty(4)).to(device)\n"
                         "        self.v = nn.Parameter(torch.zeros(2)).half()\n")
    assert [(r, line) for r, _, line in bug] == [("R009", 7), ("R009", 8)]
    clean = lint(tmp_path, "class M(nn.Module):\n    def __init__(self, device='cuda'):\n        super().__init__()\n"
                           "        self.w = nn.Parameter(torch.empty(4).to(device))\n"
                           "        self.v = nn.Parameter(torch.zeros(2, device=device))\n", "clean.py")
    assert clean == []


def test_list_of_lists_of_modules(tmp_path):
    bug = lint(tmp_path, "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                         "        self.stages = [[nn.Linear(4, 4) for _ in range(2)] for _ in range(3)]\n")
    assert [r for r, _, _ in bug] == ["R001"]
    clean = lint(tmp_path, "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                           "        self.stages = nn.ModuleList(nn.ModuleList(nn.Linear(4, 4) for _ in range(2)) for _ in range(3))\n",
                 "clean.py")
    assert clean == []


def test_modules_also_registered_one_by_one_are_clean(tmp_path):
    clean = lint(tmp_path, "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                           "        self.layers = [nn.Linear(4, 4) for _ in range(3)]\n"
                           "        for i, layer in enumerate(self.layers):\n"
                           "            self.add_module(f'layer_{i}', layer)\n")
    assert clean == []
    bug = lint(tmp_path, "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                         "        self.layers = [nn.Linear(4, 4) for _ in range(3)]\n"
                         "        for i, layer in enumerate(self.layers):\n"
                         "            print(i, layer)\n", "bug.py")
    assert [r for r, _, _ in bug] == ["R001"]


def test_list_wrapped_later_in_init_is_clean(tmp_path):
    clean = lint(tmp_path, "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                           "        self.layers = []\n        for _ in range(3):\n"
                           "            self.layers.append(nn.Linear(4, 4))\n"
                           "        self.layers = nn.ModuleList(self.layers)\n")
    assert clean == []
    bug = lint(tmp_path, "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                         "        self.layers = []\n        for _ in range(3):\n"
                         "            self.layers.append(nn.Linear(4, 4))\n"
                         "        self.other = nn.ModuleList(self.layers[:1])\n", "bug.py")
    assert [r for r, _, _ in bug] == ["R001"]


def test_calls_of_existing_attributes_are_not_constructors(tmp_path):
    clean = lint(tmp_path, "class LocalSelfAttention(nn.Module):\n    def forward(self, x):\n        return x\n\n"
                           "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                           "        self.LocalSelfAttention = LocalSelfAttention()\n"
                           "    def forward(self, x):\n        return self.LocalSelfAttention(x)\n")
    assert clean == []
    bug = lint(tmp_path, "class LocalSelfAttention(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                         "        self.q = nn.Linear(4, 4)\n\n"
                         "class M(nn.Module):\n    def forward(self, x):\n        return LocalSelfAttention()(x)\n", "bug.py")
    assert [r for r, _, _ in bug] == ["R005"]


def test_parameter_free_modules_built_in_forward_are_notes(tmp_path):
    notes = lint(tmp_path, "class M(nn.Module):\n    def forward(self, x):\n"
                           "        x = nn.ReLU()(x)\n        x = nn.ConstantPad1d(1, 0.0)(x)\n"
                           "        return nn.Softmax(dim=-1)(x) + nn.MSELoss()(x, x)\n")
    assert {(r, sev) for r, sev, _ in notes} == {("R005", "info")} and len(notes) == 4
    bug = lint(tmp_path, "class M(nn.Module):\n    def forward(self, x):\n        return nn.Linear(4, 4)(x)\n", "bug.py")
    assert [(r, sev) for r, sev, _ in bug] == [("R005", "error")]
    result = runner.invoke(app, ["lint", str(tmp_path / "m.py")])
    assert result.exit_code == 0, result.output  # notes alone do not fail the lint


def test_module_classes_imported_from_another_linted_file(tmp_path):
    base = "import torch.nn as tnn\nfrom torch.nn import Module as Mod\n\n" \
           "class Block(Mod):\n    def __init__(self):\n        super().__init__()\n        self.l = tnn.Linear(4, 4)\n"
    bug = lint(tmp_path, "from base import Block as B\n\nclass Net(nn.Module):\n    def __init__(self):\n"
                         "        super().__init__()\n        self.blocks = [B(), B()]\n", extra={"base.py": base})
    assert [(r, line) for r, _, line in bug] == [("R001", 9)]
    clean = lint(tmp_path, "from base import Block as B\n\nclass Net(nn.Module):\n    def __init__(self):\n"
                           "        super().__init__()\n        self.blocks = nn.ModuleList([B(), B()])\n", "clean.py")
    assert clean == []


def test_findings_sort_numerically_by_line(tmp_path):
    src = "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n" + "".join(
        f"        self.l{i} = [nn.Linear(4, 4)]\n" for i in range(10))
    found = lint(tmp_path, src)
    lines = [line for _, _, line in found]
    assert lines == sorted(lines) and lines[0] == 7 and lines[-1] == 16


def test_syntax_error_is_e999_and_fails(tmp_path):
    (tmp_path / "ok.py").write_text(HEAD)
    (tmp_path / "broken.py").write_text("def f(:\n    pass\n")
    result = runner.invoke(app, ["lint", str(tmp_path), "--format", "json"])
    assert result.exit_code == 1
    (f,) = json.loads(result.stdout)["findings"]
    assert f["rule"] == "E999" and f["location"].startswith(str(tmp_path / "broken.py") + ":1:")
    assert f["path"] == "" and f["subject"] == "file"
    assert "SyntaxError" in f["message"]
    (tmp_path / "broken.py").unlink()
    assert runner.invoke(app, ["lint", str(tmp_path)]).exit_code == 0


def test_list_filled_and_registered_in_the_same_loop_is_clean(tmp_path):
    clean = lint(tmp_path, "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                           "        self.blocks = []\n        for i in range(3):\n"
                           "            block = nn.Linear(4, 4)\n            self.blocks.append(block)\n"
                           "            self.add_module(str(i), block)\n")
    assert clean == []


def test_r010_state_registered_in_forward(tmp_path):
    bug = lint(tmp_path, "class M(nn.Module):\n    def forward(self, x):\n        if not hasattr(self, 'mean'):\n"
                         "            self.register_buffer('mean', x.mean(0))\n        return x - self.mean\n")
    assert [(r, line) for r, _, line in bug] == [("R010", 7)]
    clean = lint(tmp_path, "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                           "        self.register_buffer('mean', torch.zeros(4))\n"
                           "    def forward(self, x):\n        return x - self.mean\n", "clean.py")
    assert clean == []
