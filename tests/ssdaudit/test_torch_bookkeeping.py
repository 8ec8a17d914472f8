"""Class: torch's own bookkeeping is not the user's container. A weight-drop wrapper removes an RNN's hidden-to-hidden
weight from ``_parameters`` while the RNN's private ``_flat_weights`` list still holds it; forward never reads that
entry, so no R002. Real plain containers of parameters that forward reads stay R002 errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssdaudit import Severity, find_unregistered


class WeightDrop(nn.Module):
    """The language-model recipe: the raw weight is registered, a dropped copy assigned to the RNN per call."""

    def __init__(self, rnn: nn.RNNBase, p: float = 0.3) -> None:
        super().__init__()
        self.rnn = rnn
        self.p = p
        raw = rnn.weight_hh_l0
        del rnn._parameters["weight_hh_l0"]
        rnn.register_parameter("weight_hh_l0_raw", nn.Parameter(raw.data))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.dropout(self.rnn.weight_hh_l0_raw, p=self.p, training=self.training)
        setattr(self.rnn, "weight_hh_l0", w)
        self.rnn.flatten_parameters = lambda *a, **k: None  # type: ignore[method-assign]
        return self.rnn(x)[0]


class ScalesInList(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.scales = [nn.Parameter(torch.ones(8)) for _ in range(2)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for s in self.scales:
            x = self.lin(x) * s
        return x


class ListInSequentialSubclass(nn.Sequential):
    """A user subclass of a torch.nn container with a private plain list it reads: still the user's."""

    def __init__(self) -> None:
        super().__init__(nn.Linear(8, 8))
        self._gates = [nn.Parameter(torch.ones(8))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self._gates[0]


X = torch.rand(2, 5, 8)


@pytest.mark.parametrize("rnn", [lambda: nn.LSTM(8, 8, batch_first=True), lambda: nn.GRU(8, 8, batch_first=True)])
def test_weight_drop_rnn_is_clean(rnn) -> None:  # type: ignore[no-untyped-def]
    model = WeightDrop(rnn())
    before = dict(model.rnn._parameters)
    findings = find_unregistered(model, X)
    assert [f for f in findings if f.severity is not Severity.INFO] == []
    assert dict(model.rnn._parameters) == before  # the probe put the parameter dict back


def test_real_parameter_containers_stay_r002() -> None:
    (f,) = [f for f in find_unregistered(ScalesInList(), X) if f.rule == "R002"]
    assert f.path == "scales" and f.params == 16 and f.severity is Severity.ERROR
    (g,) = [f for f in find_unregistered(ListInSequentialSubclass(), X) if f.rule == "R002"]
    assert g.path == "_gates" and g.severity is Severity.ERROR
