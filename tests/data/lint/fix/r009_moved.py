"""R009 bug case: the move after nn.Parameter returns a plain tensor (.double() does so on the CPU too)."""
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(4)).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double() * self.w


def build_model() -> nn.Module:
    return Net()


def example_input() -> torch.Tensor:
    return torch.rand(2, 4)
