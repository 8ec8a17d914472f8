"""A small classifier whose loop never clears its gradients: it runs, the loss moves, and it learns badly.

    ssdaudit watch -- python examples/watch_missing_zero_grad.py           # names the bug (T001)
    ssdaudit watch -- python examples/watch_missing_zero_grad.py --fixed   # no finding
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true", help="clear the gradients every step")
parser.add_argument("--steps", type=int, default=30)
args = parser.parse_args()

torch.manual_seed(0)
x = torch.randn(256, 8)
y = (x[:, 0] + x[:, 1] > 0).long()
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.05)

for step in range(args.steps):
    batch = torch.randint(0, 256, (32,))
    if args.fixed:
        opt.zero_grad()
    loss = F.cross_entropy(model(x[batch]), y[batch])
    loss.backward()
    opt.step()
    if step % 10 == 0:
        print(f"step {step} loss {loss.item():.3f}")
