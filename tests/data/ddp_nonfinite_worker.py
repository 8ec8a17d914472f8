"""Run by torchrun in tests (tests/ssdaudit/test_rules_F001_F006.py): the first non-finite value under DDP, 2 ranks
on gloo, the doctor on every rank. ``nan_on_rank1``: rank 1's third forward saturates a softmax whose log is -inf (F002 on
rank 1); DDP's all-reduce spreads the NaN gradients to rank 0, whose own forward and backward are finite.
``clean``: the same run without the saturated batch. ``python ddp_nonfinite_worker.py OUT``: rank 0 writes
{case: {"causes": [rule, ...], "messages": {rule: message}, "notes": [...]}} to OUT/nonfinite.json."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ssdaudit.training.doctor import watch


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)
        self.sharpness = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(F.softmax(self.fc(x) * self.sharpness, dim=-1))  # log here


def run(saturate: bool) -> dict:
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DDP(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), Head()))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(rank)
    with watch(model, opt) as w:
        for step in range(5):
            x = torch.randn(16, 8, generator=g)
            model.module[2].sharpness = 1e4 if saturate and rank == 1 and step == 2 else 1.0
            loss = F.nll_loss(model(x), torch.randint(0, 4, (16,), generator=g))
            opt.zero_grad()
            loss.backward()
            opt.step()
    found = [f for f in w.findings() if f.severity.value in ("error", "warning")]
    return {"causes": [f.rule for f in found if f.caused_by is None],
            "messages": {f.rule: f.message for f in found}, "notes": list(w.report().notes)}


def main() -> None:
    dist.init_process_group("gloo")
    out = {"nan_on_rank1": run(True), "clean": run(False)}
    if dist.get_rank() == 0:
        (Path(sys.argv[1]) / "nonfinite.json").write_text(json.dumps(out, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
