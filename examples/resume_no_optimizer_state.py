"""A small training script whose checkpoint cannot resume exactly: it saves the model but not the optimizer, so SGD's
momentum restarts from zero after a resume. ``--fixed`` saves and loads the optimizer too (then the resumed run is
exact).

    python examples/resume_no_optimizer_state.py --epochs 3 --out /tmp/run
    python examples/resume_no_optimizer_state.py --epochs 3 --out /tmp/run --resume /tmp/run/last.pt
    ssdaudit resume --at 8 --steps 4 --resume-args "--resume {checkpoint}" -- python examples/resume_no_optimizer_state.py --out /tmp/run
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--out", default="runs/example")
parser.add_argument("--resume", default=None, help="a checkpoint to continue from")
parser.add_argument("--fixed", action="store_true", help="save and load the optimizer state too")
args = parser.parse_args()

torch.manual_seed(0)
data = TensorDataset(torch.randn(64, 10), torch.randint(0, 3, (64,)))
model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
start = 0
if args.resume:
    ckpt = torch.load(args.resume)
    model.load_state_dict(ckpt["model"])
    if args.fixed:
        optimizer.load_state_dict(ckpt["optimizer"])
    start = ckpt["epoch"] + 1

os.makedirs(args.out, exist_ok=True)
for epoch in range(start, args.epochs):
    loader = DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(epoch))
    for x, y in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    state = {"model": model.state_dict(), "epoch": epoch}
    if args.fixed:
        state["optimizer"] = optimizer.state_dict()
    torch.save(state, os.path.join(args.out, "last.pt"))
    print(f"epoch {epoch}: loss {loss.item():.4f}")
