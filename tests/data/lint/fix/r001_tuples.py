"""R001 bug cases in tuples the fix must repair: a parenthesised pair run in order, a one-element tuple, a bare
tuple indexed in forward (a registering container takes one iterable, not the tuple's items)."""
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, d: int = 4) -> None:
        super().__init__()
        self.pair = (nn.Linear(d, d), nn.ReLU())
        self.single = (nn.Linear(d, d),)
        self.bare = nn.Linear(d, d), nn.Linear(d, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.pair:
            x = layer(x)
        x = self.single[0](x)
        return self.bare[1](self.bare[0](x))


def build_model() -> nn.Module:
    return Net()


def example_input() -> torch.Tensor:
    return torch.rand(2, 4)
