"""Run by torchrun in tests: the doctor attached on one rank only (``if rank == WATCHED:``), as people attach
monitoring, in a DDP program that runs its own collective every step (the loss averaged for logging).

``python ddp_doctor_one_rank.py OUT WATCHED {clean,bypass,fsdp2}`` (fsdp2: the model sharded with ``fully_shard``,
whose all-gathers and reduce-scatters run every step: any collective of the doctor would meet them): the watched rank writes its warning/error rules and
notes to OUT/one_rank.json; every rank writes OUT/done_RANK when its program finished."""

import datetime
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ssdaudit.training.doctor import watch


def main() -> None:
    out, watched, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    if mode == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        fully_shard(model[0])
        ddp = fully_shard(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # from the bare module, before wrapping
    if mode != "fsdp2":
        ddp = DDP(model)
    doctor = watch(model, optimizer).attach() if rank == watched else None
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32 * dist.get_world_size() * 6, 16, generator=g)
    y = x[:, :4].argmax(1)
    for step in range(6):
        b = (step * dist.get_world_size() + rank) * 32
        optimizer.zero_grad()
        out_ = model(x[b:b + 32]) if mode == "bypass" and step % 2 else ddp(x[b:b + 32])
        loss = F.cross_entropy(out_, y[b:b + 32])
        loss.backward()
        optimizer.step()
        logged = loss.detach().clone()
        dist.all_reduce(logged)  # the program's own collective, every step
    if doctor is not None:
        doctor.detach()
        report = doctor.report()
        (out / "one_rank.json").write_text(json.dumps({
            "rules": sorted({f.rule for f in report.findings if f.severity.value in ("error", "warning")}),
            "notes": report.notes}))
    dist.destroy_process_group()
    (out / f"done_{rank}").write_text("ok")


if __name__ == "__main__":
    main()
