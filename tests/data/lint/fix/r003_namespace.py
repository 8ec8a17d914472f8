"""R003 bug case: modules in a SimpleNamespace."""
from types import SimpleNamespace

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.heads = SimpleNamespace(cls=nn.Linear(4, 2), box=nn.Linear(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads.cls(x).sum() + self.heads.box(x).sum()


def build_model() -> nn.Module:
    return Net()


def example_input() -> torch.Tensor:
    return torch.rand(2, 4)
