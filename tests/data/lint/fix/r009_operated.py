"""R009 bug cases: a view, indexing and arithmetic on a freshly wrapped nn.Parameter each return a plain tensor."""
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        w = torch.ones(4, 4)
        self.w = nn.Parameter(w).t()
        self.b = nn.Parameter(torch.zeros(2, 4))[0]
        self.s = nn.Parameter(torch.ones(4) + 1) * 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w + self.b * self.s


def build_model() -> nn.Module:
    return Net()


def example_input() -> torch.Tensor:
    return torch.rand(2, 4)
