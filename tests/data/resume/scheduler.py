"""A per-step warm-up (LambdaLR) rebuilt on resume and never loaded: the warm-up starts over (--fixed: saved and
loaded)."""
import argparse

import torch
from torch import nn

p = argparse.ArgumentParser()
p.add_argument("--resume")
p.add_argument("--fixed", action="store_true")
p.add_argument("--out", default="model.pt")
args = p.parse_args()

torch.manual_seed(0)
x, y = torch.randn(30, 5), torch.randn(30, 2)
model = nn.Linear(5, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))
epoch0 = 0
if args.resume:
    ck = torch.load(args.resume)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    if args.fixed:
        sched.load_state_dict(ck["scheduler"])
    epoch0 = ck["epoch"] + 1
for epoch in range(epoch0, 8):
    for i in range(3):
        opt.zero_grad()
        ((model(x[i * 10:(i + 1) * 10]) - y[i * 10:(i + 1) * 10]) ** 2).mean().backward()
        opt.step()
        sched.step()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                **({"scheduler": sched.state_dict()} if args.fixed else {})}, args.out)
