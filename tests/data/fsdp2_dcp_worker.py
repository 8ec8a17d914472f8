"""Run by ``tests/ssdaudit/test_distributed.py`` under torchrun (2 processes, gloo, CPU): a 3-step FSDP2 training under
GradFlowMonitor (again with FSDP2's internal map hidden, for the fallback), then a DCP save of the sharded model
beside a torch.save of its full state. Rank 0 writes ``result.json`` to the folder given as the argument.
With FSDP_DEVICE=cuda (nccl, one GPU per rank) ``benchmarks/gpu_trust.py`` runs the same on a GPU."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

LR = 0.1
DEVICE = torch.device(os.environ.get("FSDP_DEVICE", "cpu"))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 16)
        self.unused = nn.Linear(16, 16)  # registered and trainable, never called: G002
        self.head = nn.Linear(16, 3)  # 3 rows over 2 ranks: uneven shards
        self.extra = [nn.Linear(3, 3)]  # a plain list: never sharded, not in the optimizer: G001

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extra[0](self.head(torch.relu(self.stem(x))))


def loss_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).square().mean()


def train_sharded(model: nn.Module, x: torch.Tensor, log_dir: Path | None) -> dict[str, object]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from ssdaudit import GradFlowMonitor

    mesh = init_device_mesh(DEVICE.type, (dist.get_world_size(),))
    for layer in (model.stem, model.unused, model.head):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    with GradFlowMonitor(model, opt, log_dir=log_dir) as monitor:
        for _ in range(3):
            opt.zero_grad()
            monitor.drop_unapplied_grads()
            loss_of(model, x).backward()
            opt.step()
    run = monitor.run()
    first = run.stats[0]
    return {
        "tensors": [t.to_dict() for t in run.tensors],
        "device": str(DEVICE),
        "grad_norm": {t.name: float(first[0, k]) for k, t in enumerate(run.tensors)},
        "grad_max": {t.name: float(first[1, k]) for k, t in enumerate(run.tensors)},
        "grad_l1": {t.name: float(first[2, k]) for k, t in enumerate(run.tensors)},
        "update_norm": {t.name: float(first[3, k]) for k, t in enumerate(run.tensors)},
        "weight_norm": {t.name: float(first[4, k]) for k, t in enumerate(run.tensors)},
        "findings": [[f.rule, f.label, f.params] for f in monitor.findings()],
    }


def reference_step(model: nn.Module, x: torch.Tensor) -> dict[str, dict[str, float]]:
    """The same first step in one process, without sharding: the figures the monitor must reproduce."""
    twin = copy.deepcopy(model)
    params = [p for p in twin.parameters()]
    opt = torch.optim.SGD(params, lr=LR)
    loss_of(twin, x).backward()
    before = {n: p.detach().clone() for n, p in twin.named_parameters()}
    grads = {n: p.grad.clone() for n, p in twin.named_parameters() if p.grad is not None}
    opt.step()
    extra = twin.extra[0]
    grads.update({f"extra.0.{n}": p.grad.clone() for n, p in extra.named_parameters()})
    return {
        "grad_norm": {n: float(g.norm()) for n, g in grads.items()},
        "grad_max": {n: float(g.abs().max()) for n, g in grads.items()},
        "grad_l1": {n: float(g.abs().sum()) for n, g in grads.items()},
        "update_norm": {n: float((before[n] - p.detach()).norm()) for n, p in twin.named_parameters()},
        "weight_norm": {n: float(p.detach().norm()) for n, p in twin.named_parameters()},
    }


def on_device(model: Net) -> Net:
    model.extra[0].to(DEVICE)  # .to() never reaches the plain list: moved by hand, as the user of such code does
    return model.to(DEVICE)


def main(out: Path) -> None:
    if DEVICE.type == "cuda":  # "cuda" is then this rank's GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if DEVICE.type == "cuda" else "gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    x = torch.randn(6, 8).to(DEVICE)  # the same batch on every rank: FSDP's averaged gradient is the one-process one
    model = on_device(Net())
    reference = reference_step(model, x)
    result: dict[str, object] = {"reference": reference, "world": dist.get_world_size()}
    result["sharded"] = train_sharded(model, x, out / "gradflow")

    import torch.distributed.checkpoint as dcp

    dcp.save({"model": model.state_dict(), "epoch": 3}, checkpoint_id=str(out / "dcp"))
    full = {k: v.full_tensor().cpu() for k, v in model.state_dict().items()}  # a collective: every rank takes part
    if rank == 0:
        torch.save(full, out / "full.pth")

    import ssdaudit.training.gradflow.monitor as monitor_module

    monitor_module.unsharded_to_sharded = lambda _model: {}  # as on a torch whose FSDP2 internals differ
    torch.manual_seed(0)
    result["fallback"] = train_sharded(on_device(Net()), x, None)
    if rank == 0:
        (out / "result.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
