"""Class: gradient statistics fooled by scale parameters. ConvNeXt's layer scale (1e-6 at init) makes most layers'
gradients tiny, so comparing a layer with the median layer calls ordinary layers exploding. Explosion is judged
against each layer's own history: clean layer-scale, LayerNorm-transformer and BatchNorm models get no G005 in 5
steps; a twin whose gradients really grow (a gain multiplied each step) still does."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from ssdaudit.training.gradflow import GradFlowMonitor, analyse_gradflow


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pw1 = nn.Linear(c, 4 * c)
        self.pw2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(1e-6 * torch.ones(c))  # layer scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pw2(nn.functional.gelu(self.pw1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class TinyConvNeXt(nn.Module):
    def __init__(self, c: int = 8, gain_growth: float = 1.0) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 2, stride=2)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(c) for _ in range(3)))
        self.head = nn.Linear(c, 5)
        self.gain, self.gain_growth = 1.0, gain_growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.gain *= self.gain_growth  # the exploding twin: the loss scale grows each step
        return self.head(self.blocks(self.stem(x)).mean((2, 3))) * self.gain


class TransformerBlock(nn.Module):
    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(3 * 8 * 8 // 8, d)
        self.layer = nn.TransformerEncoderLayer(d, 2, 32, dropout=0.1, batch_first=True, norm_first=True)
        self.head = nn.Linear(d, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.embed(x.reshape(x.shape[0], 8, -1))).mean(1))


def bn_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


OPTIMIZERS = {  # fine-tuning rates: the layer scale stays near 1e-6 for all 5 steps
    "sgd": lambda p: torch.optim.SGD(p, lr=1e-3),
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-4),
}


def g005(model: nn.Module, steps: int = 5, optimizer: str = "adamw") -> list:
    torch.manual_seed(0)
    opt = OPTIMIZERS[optimizer](model.parameters())
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    with GradFlowMonitor(model, opt) as mon:
        for _ in range(steps):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return [f for f in analyse_gradflow(mon.run())[0] if f.rule == "G005"]


@pytest.mark.parametrize("build", [TinyConvNeXt, TransformerBlock, bn_cnn])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_clean_models_with_scale_parameters_have_no_g005(build: Callable[[], nn.Module], optimizer: str) -> None:
    assert g005(build(), optimizer=optimizer) == []


def test_really_exploding_twin_gets_g005() -> None:
    found = g005(TinyConvNeXt(gain_growth=10.0))
    assert found and all("exploding" in f.message and f.severity.value == "warning" for f in found)
    assert "head" in {f.path for f in found}
