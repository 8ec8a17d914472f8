"""A shuffled DataLoader drawing its order from the global torch RNG, which the checkpoint does not hold: the
resumed epoch gets another order (--fixed: the RNG state is saved and restored)."""
import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

p = argparse.ArgumentParser()
p.add_argument("--resume")
p.add_argument("--fixed", action="store_true")
p.add_argument("--out", default="s.pt")
args = p.parse_args()

torch.manual_seed(0)
ds = TensorDataset(torch.randn(30, 5), torch.randn(30, 1))
loader = DataLoader(ds, batch_size=5, shuffle=True)
model = nn.Sequential(nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
start = 0
if args.resume:
    ck = torch.load(args.resume)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    if args.fixed:
        torch.set_rng_state(ck["rng"])
    start = ck["epoch"] + 1
for epoch in range(start, 5):
    for xb, yb in loader:
        opt.zero_grad()
        nn.functional.mse_loss(model(xb), yb).backward()
        opt.step()
    ck = {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch}
    if args.fixed:
        ck["rng"] = torch.get_rng_state()
    torch.save(ck, args.out)
