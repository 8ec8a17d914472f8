"""Resumes the weights and the optimizer but restarts the epoch loop at 0: with an unshuffled loader every step of the
resumed run looks like the uninterrupted run's, but it goes on past the end, training the first epochs again
(--fixed: continues at the epoch after the checkpoint's)."""
import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

p = argparse.ArgumentParser()
p.add_argument("--resume")
p.add_argument("--fixed", action="store_true")
p.add_argument("--epochs", type=int, default=3)
args = p.parse_args()

torch.manual_seed(0)
loader = DataLoader(TensorDataset(torch.randn(32, 4), torch.randn(32, 1)), batch_size=8)  # 4 steps per epoch
model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
first = 0
if args.resume:
    state = torch.load(args.resume)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    first = state["epoch"] + 1 if args.fixed else 0
for epoch in range(first, args.epochs):
    for x, y in loader:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, "ckpt.pt")
