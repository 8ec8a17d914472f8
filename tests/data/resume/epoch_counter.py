"""Saves the epoch just finished and resumes at it, not after it: the resumed run replays an epoch (--fixed: +1)."""
import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

p = argparse.ArgumentParser()
p.add_argument("--resume")
p.add_argument("--fixed", action="store_true")
p.add_argument("--out", default="e.pt")
args = p.parse_args()

torch.manual_seed(0)
ds = TensorDataset(torch.randn(24, 3), torch.randn(24, 1))
model = nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
start_epoch = 0
if args.resume:
    ck = torch.load(args.resume)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    start_epoch = ck["epoch"] + 1 if args.fixed else ck["epoch"]
for epoch in range(start_epoch, 6):
    g = torch.Generator()
    g.manual_seed(100 + epoch)
    for xb, yb in DataLoader(ds, batch_size=6, shuffle=True, generator=g):
        opt.zero_grad()
        nn.functional.mse_loss(model(xb), yb).backward()
        opt.step()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch}, args.out)
