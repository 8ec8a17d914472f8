"""A model with dropout whose checkpoint holds no RNG state: the resumed run draws other masks (--fixed: saved)."""
import argparse

import torch
from torch import nn

p = argparse.ArgumentParser()
p.add_argument("--resume")
p.add_argument("--fixed", action="store_true")
p.add_argument("--out", default="drop.pt")
args = p.parse_args()

torch.manual_seed(0)
x, y = torch.randn(40, 10), torch.randint(0, 4, (40,))
model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
start = 0
if args.resume:
    ck = torch.load(args.resume, weights_only=False)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    if args.fixed:
        torch.set_rng_state(ck["rng"])
    start = ck["epoch"] + 1
model.train()
for epoch in range(start, 5):
    for i in range(0, 40, 10):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i:i + 10]), y[i:i + 10]).backward()
        opt.step()
    ck = {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch}
    if args.fixed:
        ck["rng"] = torch.get_rng_state()
    torch.save(ck, args.out)
