"""R005 (unsafe fix) bug case: parameter-free modules built and called inside forward()."""
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.ReLU(inplace=True)(self.proj(x))
        return nn.Softmax(-1)(x)


def build_model() -> nn.Module:
    return Net()


def example_input() -> torch.Tensor:
    return torch.rand(2, 4)
