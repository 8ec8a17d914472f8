"""Mixed precision with a GradScaler that is not saved: the resumed run starts from the initial scale (--fixed)."""
import argparse

import torch
from torch import nn

p = argparse.ArgumentParser()
p.add_argument("--resume")
p.add_argument("--fixed", action="store_true")
p.add_argument("--out", default="amp.pt")
args = p.parse_args()

torch.manual_seed(0)
x, y = torch.randn(32, 4), torch.randn(32, 1)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8, growth_interval=2)
start = 0
if args.resume:
    ck = torch.load(args.resume)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    if args.fixed:
        scaler.load_state_dict(ck["scaler"])
    start = ck["epoch"] + 1
for epoch in range(start, 6):
    for i in range(0, 32, 8):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x[i:i + 8]), y[i:i + 8])
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    ck = {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch}
    if args.fixed:
        ck["scaler"] = scaler.state_dict()
    torch.save(ck, args.out)
