"""Resumes the optimizer and the epoch but loads the weights into a copy of the model (--fixed: into the model)."""
import argparse
import copy

import torch
from torch import nn

p = argparse.ArgumentParser()
p.add_argument("--resume")
p.add_argument("--fixed", action="store_true")
p.add_argument("--out", default="w.pt")
args = p.parse_args()

torch.manual_seed(0)
x, y = torch.randn(36, 6), torch.randint(0, 3, (36,))
model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
start = 0
if args.resume:
    ck = torch.load(args.resume)
    target = model if args.fixed else copy.deepcopy(model)  # "keep the initial model for comparison"
    target.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    start = ck["epoch"] + 1
for epoch in range(start, 5):
    for i in range(0, 36, 12):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i:i + 12]), y[i:i + 12]).backward()
        opt.step()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, args.out)
