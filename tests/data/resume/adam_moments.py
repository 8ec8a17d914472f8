"""Adam, resumed with a fresh optimizer: its moments and step count restart (--fixed: they are saved)."""
import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

p = argparse.ArgumentParser()
p.add_argument("--ckpt", default="last.pt")
p.add_argument("--resume-from", default=None)
p.add_argument("--fixed", action="store_true")
args = p.parse_args()

torch.manual_seed(1)
ds = TensorDataset(torch.randn(40, 6), torch.randint(0, 2, (40,)))
net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 2))
optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
first_epoch = 0
if args.resume_from:
    state = torch.load(args.resume_from)
    net.load_state_dict(state["net"])
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    first_epoch = state["epoch"]
for epoch in range(first_epoch, 5):
    for xb, yb in DataLoader(ds, batch_size=10):
        optimizer.zero_grad()
        F.cross_entropy(net(xb), yb).backward()
        optimizer.step()
    save = {"net": net.state_dict(), "epoch": epoch + 1}
    if args.fixed:
        save["optimizer"] = optimizer.state_dict()
    torch.save(save, args.ckpt)
