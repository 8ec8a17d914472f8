"""R004 bug case: constant tensors made in a helper that __init__ calls, one through tensor methods."""
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self._build_tables()

    def _build_tables(self) -> None:
        self.offsets = torch.arange(4).float() / 4
        self.mix = torch.eye(4).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) @ self.mix + self.offsets


def build_model() -> nn.Module:
    return Net()


def example_input() -> torch.Tensor:
    return torch.rand(2, 4)
