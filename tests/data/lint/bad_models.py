# Each flagged line carries "# expect: CODE"; tests read these markers to check line numbers.
import collections
import functools
from types import SimpleNamespace

import torch
import torch.nn as nn
from torch.nn import Conv2d


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = Conv2d(3, 3, 1)

    def forward(self, x):
        return self.conv(x)


class ListNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = [nn.Linear(4, 4), nn.Linear(4, 4)]  # expect: R001
        self.blocks = [Block() for _ in range(3)]  # expect: R001
        head = nn.Linear(4, 2)
        self.heads = {"a": head}  # expect: R001
        self.named = collections.OrderedDict([("x", nn.ReLU())])  # expect: R001
        self.tuple_of = tuple([nn.Conv2d(1, 1, 1)])  # expect: R001
        self.weights = [nn.Parameter(torch.zeros(3))]  # expect: R002
        self.extra = []
        for _ in range(2):
            self.extra.append(nn.Linear(4, 4))  # expect: R001
        self.helper = SimpleNamespace(proj=nn.Linear(4, 4))  # expect: R003
        self.act = functools.partial(nn.GELU())  # expect: R003
        self.scale = torch.ones(4)  # expect: R004
        self.unused_tensor = torch.zeros(2)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        norm = nn.LayerNorm(4)  # expect: R005
        return norm(x) * self.scale


class Child(ListNet):
    def __init__(self):
        super().__init__()
        self.more = [Block()]  # expect: R001


class Suppressed(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = [nn.Linear(4, 4)]  # ssdaudit: ignore[R001]
        self.other = [nn.Linear(4, 4)]  # ssdaudit: ignore
        self.wrong_code = [nn.Linear(4, 4)]  # ssdaudit: ignore[R004]  # expect: R001


class Unpacked(Block):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        layers = list(self.body)
        del self.body
        self.body = layers  # expect: R001
