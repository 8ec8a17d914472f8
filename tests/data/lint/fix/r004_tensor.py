"""R004 bug case: a tensor computed from constants, kept as a plain attribute."""
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.offsets = torch.arange(4, dtype=torch.float32)  # read in forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) + self.offsets


def build_model() -> nn.Module:
    return Net()


def example_input() -> torch.Tensor:
    return torch.rand(2, 4)
