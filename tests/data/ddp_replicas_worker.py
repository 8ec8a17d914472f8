"""Run by torchrun in tests: DDP with the forward through the wrapper (clean) and bypassing it (the replicas drift:
T017). Each rank trains on its own data; rank 0 writes the error/warning rules of each run to OUT/replicas.json."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ssdaudit.training.doctor import watch


def run(bypass: bool) -> list[str]:
    torch.manual_seed(0)
    ddp = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)))
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(dist.get_rank())  # each rank its own batch, as a DistributedSampler gives
    x, y = torch.randn(8, 4, generator=g), torch.randn(8, generator=g)
    with watch(ddp, opt) as w:
        for _ in range(3):
            opt.zero_grad()
            out = ddp.module(x) if bypass else ddp(x)
            F.mse_loss(out.squeeze(1), y).backward()
            opt.step()
    return [f.rule for f in w.findings() if f.severity.value in ("error", "warning")]


def main() -> None:
    dist.init_process_group("gloo")
    found = {"clean": run(False), "bypass": run(True)}
    if dist.get_rank() == 0:
        (Path(sys.argv[1]) / "replicas.json").write_text(json.dumps(found))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
