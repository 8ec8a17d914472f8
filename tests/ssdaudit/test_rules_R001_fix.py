"""Class: the R001 fix picks the registering container the code's use calls for (issue #25). A plain list of modules
only ever run in order (``for layer in self.layers: x = layer(x)``) becomes nn.Sequential; any other use (an
index, a residual, a zip, a second output name, an append) keeps nn.ModuleList. Both key a state_dict as
``layers.0.weight``, so a checkpoint saved with either loads into the other."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import torch
from torch import nn

from ssdaudit.lint.engine import lint_paths

SOURCE = textwrap.dedent('''
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self, d: int = 4) -> None:
            super().__init__()
            self.chain = [nn.Linear(d, d), nn.ReLU()]
            self.comp = [nn.Linear(d, d) for _ in range(2)]
            self.indexed = [nn.Linear(d, d), nn.Linear(d, d)]
            self.residual = [nn.Linear(d, d)]
            self.renamed = [nn.Linear(d, d)]
            self.zipped = [nn.Linear(d, d)]
            self.norms = [nn.LayerNorm(d)]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.chain:
                x = layer(x)
            for block in self.comp:
                x = block(x)
            for layer in self.indexed:
                x = layer(x)
            x = self.indexed[0](x)
            for layer in self.residual:
                x = layer(x) + x
            for layer in self.renamed:
                y = layer(x)
            for layer, norm in zip(self.zipped, self.norms):
                x = norm(layer(x))
            return x + y


    def build_model() -> nn.Module:
        return Net()
''')
SEQUENTIAL = {"chain", "comp"}


def _load(path: Path, name: str) -> nn.Module:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_model()


def test_only_lists_run_in_order_become_sequential(tmp_path: Path) -> None:
    path = tmp_path / "net.py"
    path.write_text(SOURCE)
    fixes = {f.path.split(".")[1]: f.autofix for f in lint_paths([path]).findings if f.rule == "R001"}
    assert set(fixes) == {"chain", "comp", "indexed", "residual", "renamed", "zipped", "norms"}
    for attr, fix in fixes.items():
        assert fix is not None and fix.safe
        assert ("nn.Sequential" in fix.title) == (attr in SEQUENTIAL), (attr, fix.title)
    assert "state_dict() keys stay chain.0.weight" in fixes["chain"].title  # type: ignore[union-attr]


def test_sequential_fix_runs_the_same_and_keys_its_state_dict_like_modulelist(tmp_path: Path) -> None:
    path = tmp_path / "net_fixed.py"
    path.write_text(SOURCE)
    lint_paths([path], fix=True)
    text = path.read_text()
    assert "self.chain = nn.Sequential(nn.Linear(d, d), nn.ReLU())" in text
    assert "self.comp = nn.Sequential(*[nn.Linear(d, d) for _ in range(2)])" in text
    assert "self.indexed = nn.ModuleList([nn.Linear(d, d), nn.Linear(d, d)])" in text
    assert lint_paths([path]).findings == []
    fixed = _load(path, "net_fixed")
    assert isinstance(fixed.chain, nn.Sequential) and isinstance(fixed.indexed, nn.ModuleList)
    # the same model with every container a ModuleList: its checkpoint loads strictly into the fixed one
    as_lists = tmp_path / "net_lists.py"
    as_lists.write_text(text.replace("nn.Sequential(*", "nn.ModuleList(").replace(
        "nn.Sequential(nn.Linear(d, d), nn.ReLU())", "nn.ModuleList([nn.Linear(d, d), nn.ReLU()])"))
    other = _load(as_lists, "net_lists")
    assert isinstance(other.chain, nn.ModuleList)
    assert list(other.state_dict()) == list(fixed.state_dict())
    fixed.load_state_dict(other.state_dict())
    x = torch.rand(2, 4)
    torch.testing.assert_close(fixed(x), other(x))


def test_lint_fix_says_what_each_fix_did(tmp_path: Path) -> None:
    """`lint --fix` names each applied fix (which container, that the keys stay), not only a count."""
    from typer.testing import CliRunner

    from ssdaudit.cli import app

    path = tmp_path / "net.py"
    path.write_text(SOURCE)
    result = CliRunner().invoke(app, ["lint", str(path), "--fix"])
    fixed = [line for line in result.stdout.splitlines() if line.startswith("fixed ")]
    assert len(fixed) == 7, result.stdout
    chain = next(line for line in fixed if "self.chain" in line)
    assert "R001" in chain and "nn.Sequential" in chain and "state_dict() keys stay" in chain
    assert all("nn.ModuleList" in line for line in fixed if "self.indexed" in line)
    lines = [int(line.split(":")[1]) for line in fixed]
    assert lines == sorted(lines)  # in the file's order
