"""Class: parameters built inside forward (issue #23 class 2), the static side of R011. ``nn.Parameter(...)`` or a
fresh tensor with ``requires_grad=True`` made in forward() (or a method it calls) and used is a new weight per call.
Clean twins: the weight made in __init__, a constant tensor per call (``requires_grad=False``), a local nothing reads;
a parameter assigned to ``self.<name>`` in forward is registered late: R010's, never R011's too. The runtime side
(``find_unregistered``) must agree on the same classes."""

from __future__ import annotations

import importlib.util
import re
import textwrap
from pathlib import Path

import torch

from ssdaudit import find_unregistered
from ssdaudit.lint.engine import lint_paths

SOURCE = textwrap.dedent('''
    import torch
    from torch import nn


    class InlineBias(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ nn.Parameter(torch.randn(x.shape[-1], x.shape[-1]))  # expect: R011


    class LocalBias(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            bias = nn.Parameter(torch.zeros(x.shape[1], x.shape[1]))  # expect: R011
            return (x @ x.transpose(1, 2) + bias).softmax(-1) @ x


    class Queries(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            queries = torch.randn(4, x.shape[-1], requires_grad=True)  # expect: R011
            return (x @ queries.t()).mean(-1)


    class ScaleUnderscore(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scale = torch.ones(x.shape[-1]).requires_grad_()  # expect: R011
            return x * scale


    class InHelper(nn.Module):
        def _gate(self, d: int) -> nn.Parameter:
            return nn.Parameter(torch.ones(d))  # expect: R011

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self._gate(x.shape[-1])


    class InInit(nn.Module):
        def __init__(self, d: int = 8) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(d))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.bias


    class ConstantPerCall(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mask = torch.ones(x.shape[-1], requires_grad=False).tril()
            unused = nn.Parameter(torch.zeros(3))
            return x * mask


    class LazyScale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.scale is None:
                self.scale = nn.Parameter(torch.ones(x.shape[-1]))  # expect: R010
            return x * self.scale
''')
CLASSES = ("InlineBias", "LocalBias", "Queries", "ScaleUnderscore", "InHelper", "InInit", "ConstantPerCall", "LazyScale")


def _expected(text: str) -> set[tuple[int, str]]:
    return {(i, m.group(1)) for i, line in enumerate(text.splitlines(), start=1)
            if (m := re.search(r"# expect: (R\d{3})", line))}


def test_parameters_built_in_forward_are_r011_and_lazy_registration_is_r010_only(tmp_path: Path) -> None:
    path = tmp_path / "models.py"
    path.write_text(SOURCE)
    result = lint_paths([path])
    assert {(f.location.line, f.rule) for f in result.findings if f.location} == _expected(SOURCE)
    assert {f.path.split(".")[0] for f in result.findings if f.rule == "R011"} == {
        "InlineBias", "LocalBias", "Queries", "ScaleUnderscore", "InHelper"}


def test_static_and_runtime_r011_agree_on_the_same_classes(tmp_path: Path) -> None:
    path = tmp_path / "models_rt.py"
    path.write_text(SOURCE)
    static = {f.path.split(".")[0] for f in lint_paths([path]).findings if f.rule == "R011"}
    spec = importlib.util.spec_from_file_location("models_rt", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    runtime = {name for name in CLASSES
               if any(f.rule == "R011" for f in find_unregistered(getattr(module, name)(), torch.rand(2, 5, 8)))}
    assert static == runtime and runtime
