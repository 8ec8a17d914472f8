"""R002 bug cases: parameters in a plain list and a plain dict."""
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scales = [nn.Parameter(torch.ones(4)) for _ in range(2)]
        self.bias = {"a": nn.Parameter(torch.zeros(4))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for s in self.scales:
            x = x * s
        return x + self.bias["a"]


def build_model() -> nn.Module:
    return Net()


def example_input() -> torch.Tensor:
    return torch.rand(2, 4)
