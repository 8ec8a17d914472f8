"""Class: registration bugs the linter missed (issue #23 class 8). R004 for tensors made in a helper method that
__init__ calls and for tensor factories followed by tensor methods; R009 for any tensor operation on a freshly
wrapped nn.Parameter (a view, indexing, arithmetic: each returns a plain non-leaf tensor). Every bug line carries
``# expect: CODE``; every other line is a clean twin that must stay silent."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import torch
from torch import nn

from ssdaudit.lint.engine import lint_paths

SOURCE = textwrap.dedent('''
    import torch
    from torch import nn


    class Tables(nn.Module):
        def __init__(self, n: int = 4) -> None:
            super().__init__()
            self.proj = nn.Linear(n, n)
            self._build(n)
            self._buffers_in_helper(n)
            self.pos = torch.arange(n).float() / n  # expect: R004
            self.rot = torch.zeros(n, n).t()  # expect: R004
            self.col = torch.ones(n).unsqueeze(0).view(n, 1)  # expect: R004
            self.ids = torch.arange(n).tolist()
            self.causal = torch.tril(torch.ones(n, n))  # expect: R004
            self.decay = torch.exp(torch.arange(n) * -0.5)  # expect: R004
            self.same = torch.equal(torch.ones(n), torch.ones(n))

        def _build(self, n: int) -> None:
            self.table = torch.zeros(n)  # expect: R004
            self._deeper(n)

        def _deeper(self, n: int) -> None:
            self.scale = torch.ones(n).float()  # expect: R004

        def _buffers_in_helper(self, n: int) -> None:
            self.register_buffer("mean", torch.zeros(n), persistent=False)

        def _never_called(self, n: int) -> torch.Tensor:
            self.scratch = torch.zeros(n)
            return self.scratch

        def _cache(self, x: torch.Tensor) -> None:
            self.cached = torch.zeros_like(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self._cache(x)
            y = self.proj(x) + self.table * self.scale + self.pos + self.mean + self.cached + x @ self.rot
            return y + self.col.sum() + self.scratch.sum() + len(self.ids) + self.causal.sum() + self.decay.sum() + self.same


    class Wrapped(nn.Module):
        def __init__(self, n: int = 4, device: str = "cpu") -> None:
            super().__init__()
            w = torch.randn(n, n)
            self.moved = nn.Parameter(w).to(device)  # expect: R009
            self.flipped = nn.Parameter(w).t()  # expect: R009
            self.squeezed = nn.Parameter(w[None]).squeeze()  # expect: R009
            self.viewed = nn.Parameter(w).view(-1)  # expect: R009
            self.doubled = nn.Parameter(w) * 2  # expect: R009
            self.row = nn.Parameter(w)[0]  # expect: R009
            self.negated = -nn.Parameter(w)  # expect: R009
            self.ok_t = nn.Parameter(w.t())
            self.ok_scaled = nn.Parameter(w * 2)
            self.ok_inplace = nn.Parameter(torch.empty(n)).uniform_(-1, 1)
            self.ok_grad = nn.Parameter(w).requires_grad_(False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x
''')


def _expected(text: str) -> set[tuple[int, str]]:
    return {(i, m.group(1)) for i, line in enumerate(text.splitlines(), start=1)
            if (m := re.search(r"# expect: (R\d{3})", line))}


def test_helper_tensors_chains_and_operated_parameters_are_found_and_twins_stay_clean(tmp_path: Path) -> None:
    path = tmp_path / "models.py"
    path.write_text(SOURCE)
    result = lint_paths([path])
    assert {(f.location.line, f.rule) for f in result.findings if f.location} == _expected(SOURCE)
    (table,) = [f for f in result.findings if f.path == "Tables.table"]
    assert "self._build()" in table.message


def test_the_operated_parameters_really_are_plain_tensors() -> None:
    """The premise of the R009 extension, checked on torch itself: each operation leaves nn.Parameter behind."""
    w = torch.randn(3, 3)
    for out in (nn.Parameter(w).t(), nn.Parameter(w).view(-1), nn.Parameter(w) * 2, nn.Parameter(w)[0],
                nn.Parameter(w[None]).squeeze(), -nn.Parameter(w)):
        assert not isinstance(out, nn.Parameter) and not out.is_leaf
    assert isinstance(nn.Parameter(w.t()), nn.Parameter)


def test_r009_fix_moves_every_operation_inside(tmp_path: Path) -> None:
    path = tmp_path / "models.py"
    path.write_text(SOURCE)
    result = lint_paths([path], fix=True)
    text = path.read_text()
    for line in ("self.flipped = nn.Parameter(w.t())", "self.doubled = nn.Parameter(w * 2)",
                 "self.row = nn.Parameter(w[0])", "self.squeezed = nn.Parameter(w[None].squeeze())",
                 "self.negated = nn.Parameter(-w)", "self.moved = nn.Parameter(w.to(device))"):
        assert line in text
    assert not [f for f in result.findings if f.rule == "R009"]
    compile(text, str(path), "exec")
