"""R001 bug cases built in a local variable first: a list filled by append in a loop, a dict filled by key, a list
literal, each then assigned to self (found by a new-user trial: lint saw none of them)."""
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, d: int = 4) -> None:
        super().__init__()
        layers = []
        for _ in range(2):
            layers.append(nn.Linear(d, d))
        self.layers = layers
        heads = {}
        heads["cls"] = nn.Linear(d, 3)
        self.heads = heads
        blocks = [nn.Linear(d, d)]
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        for block in self.blocks:
            x = block(x)
        return self.heads["cls"](x)


def build_model() -> nn.Module:
    return Net()


def example_input() -> torch.Tensor:
    return torch.rand(2, 4)
