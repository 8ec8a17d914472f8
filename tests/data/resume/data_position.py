"""Checkpoints every 5 steps, mid-epoch, and resumes at the epoch's first batch (--fixed: skips the batches done)."""
import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

p = argparse.ArgumentParser()
p.add_argument("--resume")
p.add_argument("--fixed", action="store_true")
p.add_argument("--out", default="step.pt")
args = p.parse_args()

torch.manual_seed(0)
ds = TensorDataset(torch.randn(64, 4), torch.randn(64, 2))
model = nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
step, epoch0 = 0, 0
if args.resume:
    ck = torch.load(args.resume)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    step, epoch0 = ck["step"], ck["epoch"]
for epoch in range(epoch0, 4):
    g = torch.Generator().manual_seed(epoch)
    for i, (xb, yb) in enumerate(DataLoader(ds, batch_size=8, shuffle=True, generator=g)):
        if args.fixed and args.resume and epoch == epoch0 and i < ck["batch"]:
            continue
        opt.zero_grad()
        nn.functional.mse_loss(model(xb), yb).backward()
        opt.step()
        step += 1
        if step % 5 == 0:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "epoch": epoch,
                        "batch": i + 1}, args.out)
