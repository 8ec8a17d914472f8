"""A classifier whose hand-written soft-target loss (a low temperature, as in distillation) takes log(softmax(...)):
once the scaled logits spread by more than about 100, softmax underflows to exactly 0, log(0) = -inf, and the loss
and every gradient after it are inf/NaN: the run is lost.

    ssdaudit watch -- python examples/watch_nan_log_softmax.py           # F002: the module, `log` and the line
    ssdaudit watch -- python examples/watch_nan_log_softmax.py --fixed   # log_softmax: no finding
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true", help="use log_softmax")
parser.add_argument("--steps", type=int, default=20)
args = parser.parse_args()


class SoftTargetLoss(nn.Module):
    """Cross-entropy against soft (label-smoothed) targets, at temperature ``t``."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if args.fixed:
            log_p = F.log_softmax(logits / self.t, dim=-1)
        else:
            log_p = torch.log(F.softmax(logits / self.t, dim=-1))
        return -(target * log_p).sum(-1).mean()


torch.manual_seed(0)
x = torch.randn(512, 32)
y = (x[:, :16].mean(1) > x[:, 16:].mean(1)).long()
target = F.one_hot(y, 4).float() * 0.9 + 0.1 / 4
model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))
criterion = SoftTargetLoss(t=0.02)
opt = torch.optim.SGD(model.parameters(), lr=0.01)

for step in range(args.steps):
    batch = torch.randint(0, 512, (64,))
    opt.zero_grad()
    loss = criterion(model(x[batch]), target[batch])
    loss.backward()
    opt.step()
    if step % 5 == 0:
        print(f"step {step} loss {loss.item():.3f}")
