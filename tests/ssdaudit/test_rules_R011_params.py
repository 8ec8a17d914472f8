"""Class: parameters created inside forward. ``nn.Parameter(...)`` or a fresh leaf with ``requires_grad=True`` built
in ``forward()`` and used is a new random weight per call, in no ``parameters()``: an R011 error with file:line.
Clean twins: the same weights made once in ``__init__``, a module built in forward (R005's), lazy initialisation
that registers the parameter, a constant tensor made per call."""

from __future__ import annotations

import threading

import torch
from torch import nn

from ssdaudit import Severity, find_unregistered


class RelPosBias(nn.Module):
    """Attention with a relative-position bias; ``in_init`` is the fixed twin."""

    def __init__(self, in_init: bool, dim: int = 8, n: int = 5) -> None:
        super().__init__()
        self.qk = nn.Linear(dim, dim)
        self.in_init = in_init
        if in_init:
            self.bias = nn.Parameter(torch.zeros(n, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias if self.in_init else nn.Parameter(torch.zeros(x.shape[1], x.shape[1]))
        return (self.qk(x) @ x.transpose(1, 2) + bias).softmax(-1) @ x


class QueryHead(nn.Module):
    """Learned queries drawn per call with requires_grad=True (a submodule, so the finding names it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        queries = torch.randn(4, x.shape[-1], requires_grad=True)
        return (x @ queries.t()).mean(-1)


class WithQueries(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(8, 8)
        self.head = QueryHead()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(x))


class ScaleRequiresGradUnderscore(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.ones(8).requires_grad_()
        return self.lin(x) * scale


class LazyScale(nn.Module):
    """Lazy initialisation: the parameter is registered on the first call (the R010 question, not R011)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale: nn.Parameter | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            self.scale = nn.Parameter(torch.ones(x.shape[-1]))
        return x * self.scale


class ConstantPerCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(x.shape[1], x.shape[1]).tril()
        return self.lin(mask @ x)


class NormBuiltInForward(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.LayerNorm(x.shape[-1])(x)


X = torch.rand(2, 5, 8)


def _r011(model: nn.Module) -> list:
    return [f for f in find_unregistered(model, X) if f.rule == "R011"]


def test_parameter_built_in_forward_is_an_error_with_its_line() -> None:
    (f,) = _r011(RelPosBias(in_init=False))
    assert f.severity is Severity.ERROR and f.params == 25
    assert f.location is not None and __file__.rsplit("/", 1)[-1] in str(f.location)
    assert "nn.Parameter" in f.message and "(5, 5)" in f.message


def test_requires_grad_leaf_built_in_forward_names_the_module() -> None:
    (f,) = _r011(WithQueries())
    assert f.path == "head" and f.params == 32 and "requires_grad=True" in f.message
    (g,) = _r011(ScaleRequiresGradUnderscore())
    assert g.params == 8


def test_clean_twins_have_no_r011() -> None:
    for model in (RelPosBias(in_init=True), LazyScale(), ConstantPerCall(), NormBuiltInForward()):
        assert _r011(model) == [], type(model).__name__
    (r005,) = [f for f in find_unregistered(NormBuiltInForward(), X) if f.rule == "R005"]
    assert r005.severity is Severity.ERROR


def test_parameter_patch_is_undone_and_thread_local() -> None:
    before = nn.Parameter.__dict__["__new__"]
    made: list[nn.Parameter] = []
    from ssdaudit.registration.observe import ConstructionRecorder

    with ConstructionRecorder(lambda m: None, made.append):
        nn.Parameter(torch.zeros(1))
        worker = threading.Thread(target=lambda: nn.Parameter(torch.zeros(2)))
        worker.start()
        worker.join()
    assert nn.Parameter.__dict__["__new__"] is before
    assert [tuple(p.shape) for p in made] == [(1,)]
