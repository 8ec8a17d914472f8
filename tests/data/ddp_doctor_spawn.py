"""Run under ``ssdaudit watch`` in tests (tests/ssdaudit/test_rules_T024_T029.py): a training script written the way
pytorch/examples' DDP tutorial is, its workers started by ``torch.multiprocessing`` (``mp.spawn``, or
``start_processes`` with another start method) and the process group made inside them (gloo, 2 processes).

``python ddp_doctor_spawn.py PORT CASE [START_METHOD]``; CASE: ``clean``, ``bypass`` (every other forward calls the
module, not its DDP wrapper: T024), ``no_set_epoch`` (the DistributedSampler's set_epoch never called: T028),
``raises`` (rank 1 raises at its third step), ``alone_clean`` / ``alone_never_cleared`` (no process group: each
worker trains its own model, zero_grad never called in the second: T001). Each worker prints a line (the report of
``--format json`` must stay alone on stdout)."""

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler


def alone(index: int, case: str) -> None:
    torch.manual_seed(index)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(4):
        if case != "alone_never_cleared":
            opt.zero_grad()
        F.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()
        opt.step()


def main(rank: int, world_size: int, port: int, case: str) -> None:
    print(f"worker {rank} starts")
    if case.startswith("alone"):
        return alone(rank, case)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(3)
    ds = TensorDataset(torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g))
    sampler = DistributedSampler(ds)
    loader = DataLoader(ds, batch_size=8, sampler=sampler)
    step = 0
    for epoch in range(3):
        if case != "no_set_epoch":
            sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            if case == "raises" and rank == 1 and step == 2:
                raise RuntimeError("rank 1 failed mid-run")
            opt.zero_grad()
            out = model(x) if case == "bypass" and i % 2 == 1 else ddp(x)
            F.cross_entropy(out, y).backward()
            opt.step()
            step += 1
    dist.destroy_process_group()


if __name__ == "__main__":
    port, case = int(sys.argv[1]), sys.argv[2]
    method = sys.argv[3] if len(sys.argv) > 3 else "spawn"
    if method == "spawn":
        mp.spawn(main, args=(2, port, case), nprocs=2)
    else:
        mp.start_processes(main, args=(2, port, case), nprocs=2, start_method=method)
