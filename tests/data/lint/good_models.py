# The correct twins of bad_models.py: nothing here may be flagged.
import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.conv(x)


class GoodNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.blocks = nn.Sequential(*[Block() for _ in range(3)])
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 2)})
        self.weights = nn.ParameterList([nn.Parameter(torch.zeros(3))])
        self.extra = nn.ModuleList()
        for _ in range(2):
            self.extra.append(nn.Linear(4, 4))
        self.norm = nn.LayerNorm(4)
        self.register_buffer("scale", torch.ones(4))
        self.sizes = [3, 4, 5]  # plain data in a list is fine
        self.cached = torch.zeros(2)  # never read in forward: not R004

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        x = torch.nn.functional.relu(x)
        return self.norm(x) * self.scale


class NotAModule:
    def __init__(self):
        self.layers = [nn.Linear(4, 4)]  # a plain class may hold what it likes


class Aliased(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.taps = list(self.body)  # aliases: the modules stay registered through self.body

    def forward(self, x):
        return self.body(x)
