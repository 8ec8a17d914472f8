"""Run by torchrun under ``ssdaudit watch`` in tests: a DDP program whose rank 1 raises at its third step. Rank 0
ends by the program's own error handling (its next collective fails: the peer is gone) and writes OUT/rank0_error;
the doctor must never be what it waits on."""

import datetime
import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

out = Path(sys.argv[1])
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
rank = dist.get_rank()
torch.manual_seed(0)
ddp = DDP(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)))
opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
g = torch.Generator().manual_seed(rank)
try:
    for step in range(10):
        if rank == 1 and step == 2:
            raise RuntimeError("rank 1 failed mid-run")
        x, y = torch.randn(8, 4, generator=g), torch.randn(8, generator=g)
        opt.zero_grad()
        F.mse_loss(ddp(x).squeeze(1), y).backward()
        opt.step()
except RuntimeError as exc:
    if rank == 0:  # the program's own handling: record, then fail
        (out / "rank0_error").write_text("".join(traceback.format_exception_only(type(exc), exc)))
    raise
