"""Saves the model only: SGD's momentum restarts on resume (--fixed: the optimizer is saved and loaded)."""
import argparse

import torch
from torch import nn

p = argparse.ArgumentParser()
p.add_argument("--resume")
p.add_argument("--out", default="ckpt.pt")
p.add_argument("--fixed", action="store_true")
args = p.parse_args()

torch.manual_seed(0)
X, Y = torch.randn(48, 8), torch.randn(48, 1)
model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
start = 0
if args.resume:
    ck = torch.load(args.resume)
    model.load_state_dict(ck["model"])
    if args.fixed:
        opt.load_state_dict(ck["opt"])
    start = ck["epoch"] + 1
for epoch in range(start, 6):
    for i in range(0, 48, 12):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(X[i:i + 12]), Y[i:i + 12])
        loss.backward()
        opt.step()
    ck = {"model": model.state_dict(), "epoch": epoch}
    if args.fixed:
        ck["opt"] = opt.state_dict()
    torch.save(ck, args.out)
