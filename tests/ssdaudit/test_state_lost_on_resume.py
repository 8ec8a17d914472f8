"""Class: state outside tensors that gates behaviour, lost on resume. A Python flag or counter that the checkpoint
does not hold makes the reloaded model's next training forward differ (R007 naming the attribute with both values).
Clean twins: the flag as a registered buffer, BatchNorm (running statistics are buffers), Dropout (same RNG)."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from ssdaudit.registration.roundtrip import check_roundtrip


class ActNorm(nn.Module):
    """Glow's activation normalisation: a data-dependent initialisation on the first training batch."""

    def __init__(self, ch: int, as_buffer: bool, private: bool = False, persistent: bool = True) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(ch))
        self.logs = nn.Parameter(torch.zeros(ch))
        self.as_buffer = as_buffer
        self.flag = "_initialized" if private else "initialized"
        if as_buffer:
            self.register_buffer("done", torch.tensor(False), persistent=persistent)
        else:
            setattr(self, self.flag, False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        done = bool(self.done) if self.as_buffer else getattr(self, self.flag)
        if self.training and not done:
            with torch.no_grad():
                self.loc.copy_(-x.mean(0))
                self.logs.copy_(-(x.std(0) + 1e-6).log())
            if self.as_buffer:
                self.done.fill_(True)
            else:
                setattr(self, self.flag, True)
        return (x + self.loc) * self.logs.exp()


class WarmupGate(nn.Module):
    """A residual branch faded in over the first training calls by a Python step counter (fully on in eval)."""

    def __init__(self, as_buffer: bool) -> None:
        super().__init__()
        self.branch = nn.Linear(6, 6)
        self.as_buffer = as_buffer
        if as_buffer:
            self.register_buffer("step", torch.zeros((), dtype=torch.long))
        else:
            self.step = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = min(1.0, float(self.step) / 4) if self.training else 1.0
        if self.training:
            if self.as_buffer:
                self.step += 1
            else:
                self.step = self.step + 1
        return x + alpha * self.branch(x)


def flow(as_buffer: bool, private: bool = False, persistent: bool = True) -> nn.Module:
    return nn.Sequential(ActNorm(6, as_buffer, private, persistent), nn.Linear(6, 6))


X = torch.randn(16, 6) * 3 + 1


@pytest.mark.parametrize(("build", "named"), [
    (lambda: flow(False), "`0.initialized: True vs False`"),
    (lambda: flow(False, private=True), "`0._initialized: True vs False`"),
    (lambda: WarmupGate(False), "`step: 1 vs 0`"),
    (lambda: flow(True, persistent=False), "`0.done: True vs False (buffer kept out of state_dict())`"),
])
def test_python_state_lost_on_resume_is_r007(build: Callable[[], nn.Module], named: str) -> None:
    (f,) = check_roundtrip(build, X)
    assert f.rule == "R007" and "resuming" in f.message and named in f.message


def cnn_bn_dropout() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 6))


@pytest.mark.parametrize("build", [lambda: flow(True), lambda: WarmupGate(True), cnn_bn_dropout])
def test_state_in_buffers_batchnorm_dropout_stay_clean(build: Callable[[], nn.Module]) -> None:
    assert check_roundtrip(build, X) == []
