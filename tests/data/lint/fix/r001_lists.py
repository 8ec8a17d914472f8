"""R001 bug cases the fix must repair: a list, a list of lists, a dict, a list filled by append."""
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, d: int = 4) -> None:
        super().__init__()
        # comments stay where they are
        self.layers = [
            nn.Linear(d, d),  # first
            nn.Linear(d, d),
        ]
        self.stages = [[nn.Linear(d, d) for _ in range(2)] for _ in range(2)]
        self.heads = {"cls": nn.Linear(d, 2), "box": nn.Linear(d, 4)}
        self.extra = []
        for _ in range(2):
            self.extra.append(nn.Linear(d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        for stage in self.stages:
            for layer in stage:
                x = layer(x)
        for layer in self.extra:
            x = layer(x)
        return self.heads["cls"](x).sum() + self.heads["box"](x).sum()


def build_model() -> nn.Module:
    return Net()


def example_input() -> torch.Tensor:
    return torch.rand(2, 4)
