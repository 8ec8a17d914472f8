"""Run by torchrun in tests (tests/ssdaudit/test_rules_T024_T029.py): one process group, every distributed bug class
of the training doctor next to its clean twin, each case its own ``watch`` (its own keys in the job's store).

``python ddp_doctor_worker.py OUT [CASE ...]``: rank 0 writes {case: the warning/error rules found} to OUT/doctor.json
(every case when none is named). The doctor is attached on every rank."""

import contextlib
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from ssdaudit.training.doctor import watch


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(123)  # the same dataset on every rank, as a file on disk is
    return TensorDataset(torch.randn(64, 4, generator=g), torch.randn(64, generator=g))


def own_batches(steps: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each rank its own batches, as a DistributedSampler gives."""
    g = torch.Generator().manual_seed(1000 + dist.get_rank())
    return [(torch.randn(8, 4, generator=g), torch.randn(8, generator=g)) for _ in range(steps)]


def rules(w) -> list[str]:
    return sorted({f.rule for f in w.findings() if f.severity.value in ("error", "warning")})


def train(forward, model_for_opt, batches, lr=0.1, wrap=None, average=None) -> list[str]:
    opt = torch.optim.SGD(model_for_opt.parameters(), lr=lr)
    with watch(wrap if wrap is not None else model_for_opt, opt) as w:
        for x, y in batches:
            opt.zero_grad()
            F.mse_loss(forward(x).squeeze(1), y).backward()
            if average is not None:
                average()
            opt.step()
    return rules(w)


# --- DDP: the forward through the wrapper, or around it (T024) --------------------------------------------------

def ddp_clean():
    ddp = DDP(net())
    return train(ddp, ddp, own_batches())


def ddp_bypass_opt_from_wrapper():
    ddp = DDP(net())
    return train(ddp.module, ddp, own_batches())


def ddp_bypass_opt_from_module():
    model = net()
    opt_first = model  # the optimizer is built from the bare module before wrapping: the common order
    batches = own_batches()
    opt = torch.optim.SGD(opt_first.parameters(), lr=0.1)
    ddp = DDP(model)
    with watch(model, opt) as w:
        for i, (x, y) in enumerate(batches):
            opt.zero_grad()
            out = ddp(x) if i == 0 else model(x)  # a Trainer that calls the unwrapped module on some steps
            F.mse_loss(out.squeeze(1), y).backward()
            opt.step()
    del ddp
    return rules(w)


def ddp_clean_opt_from_module():
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ddp = DDP(model)
    with watch(model, opt) as w:
        for x, y in own_batches():
            opt.zero_grad()
            F.mse_loss(ddp(x).squeeze(1), y).backward()
            opt.step()
        with torch.no_grad():
            model(x)  # evaluation through the bare module is fine
    return rules(w)


# --- parameters outside DDP's buckets (T025) --------------------------------------------------------------------

def ddp_replaced_after_wrapping():
    model = net()
    ddp = DDP(model, find_unused_parameters=True)  # (without it DDP raises at the second step)
    torch.manual_seed(dist.get_rank())
    model[2] = nn.Linear(8, 1)  # a new head after wrapping: in none of DDP's buckets
    return train(ddp, ddp, own_batches())


def ddp_replaced_before_wrapping():
    model = net()
    torch.manual_seed(7)
    model[2] = nn.Linear(8, 1)
    ddp = DDP(model)
    return train(ddp, ddp, own_batches())


def ddp_moved_after_wrapping():
    model = net()
    ddp = DDP(model)
    model.double()  # new gradient accumulators: DDP's hooks never fire
    batches = [(x.double(), y.double()) for x, y in own_batches()]
    return train(ddp, ddp, batches)


def ddp_moved_before_wrapping():
    model = net().double()
    ddp = DDP(model)
    batches = [(x.double(), y.double()) for x, y in own_batches()]
    return train(ddp, ddp, batches)


def ddp_recreated_after_wrapping():
    model = net()
    ddp = DDP(model)
    model = net()  # re-created after wrapping: the wrapper holds the old instance
    out = train(model, model, own_batches())
    del ddp
    return out


def ddp_wrapped_and_an_eval_copy():
    import copy

    ddp = DDP(net())
    reference = copy.deepcopy(ddp.module).eval()  # a frozen copy for evaluation, not trained: fine
    out = train(ddp, ddp, own_batches())
    with torch.no_grad():
        reference(torch.zeros(1, 4))
    return out


# --- hand-written data parallelism (T026, T017) -------------------------------------------------------------------

def _averager(model: nn.Module):
    def average() -> None:
        for p in model.parameters():
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()
    return average


def manual_unsynced_init():
    model = net(seed=dist.get_rank())  # each rank its own initial weights, never broadcast
    return train(model, model, own_batches(), average=_averager(model))


def manual_synced_init():
    model = net(seed=dist.get_rank())
    for p in model.parameters():
        dist.broadcast(p.data, src=0)
    return train(model, model, own_batches(), average=_averager(model))


def ddp_rank_dependent_lr():
    ddp = DDP(net())
    return train(ddp, ddp, own_batches(), lr=0.1 * (dist.get_rank() + 1))  # the replicas drift: T017


# --- the data: samplers (T027, T028) -----------------------------------------------------------------------------

def _loader_loop(loader, ddp, opt, epochs, sampler=None):
    for epoch in range(epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad()
            F.mse_loss(ddp(x).squeeze(1), y).backward()
            opt.step()


def no_distributed_sampler():
    ddp = DDP(net())
    torch.manual_seed(5)  # the same shuffle on every rank
    loader = DataLoader(dataset(), batch_size=8, shuffle=True)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    with watch(ddp, opt) as w:
        _loader_loop(loader, ddp, opt, 1)
    return rules(w)


def distributed_sampler_set_epoch():
    ddp = DDP(net())
    sampler = DistributedSampler(dataset())
    loader = DataLoader(dataset(), batch_size=8, sampler=sampler)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    with watch(ddp, opt) as w:
        _loader_loop(loader, ddp, opt, 3, sampler)
    return rules(w)


def distributed_sampler_no_set_epoch():
    ddp = DDP(net())
    loader = DataLoader(dataset(), batch_size=8, sampler=DistributedSampler(dataset()))
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    with watch(ddp, opt) as w:
        _loader_loop(loader, ddp, opt, 3)
    return rules(w)


# --- no_sync (T029) ------------------------------------------------------------------------------------------------

def _accumulate(last_outside: bool):
    ddp = DDP(net())
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    batches = own_batches(6)
    with watch(ddp, opt) as w:
        for i, (x, y) in enumerate(batches):
            last = (i + 1) % 2 == 0
            with contextlib.nullcontext() if last and last_outside else ddp.no_sync():
                F.mse_loss(ddp(x).squeeze(1), y).backward()
            if last:
                opt.step()
                opt.zero_grad()
    return rules(w)


def no_sync_every_micro_batch():
    return _accumulate(False)


def no_sync_but_the_last():
    return _accumulate(True)


# --- FSDP2 ---------------------------------------------------------------------------------------------------------

def _fsdp(sampler: bool):
    from torch.distributed.fsdp import fully_shard

    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    fully_shard(model[0])
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(5)
    ds = dataset()
    loader = (DataLoader(ds, batch_size=8, sampler=DistributedSampler(ds)) if sampler
              else DataLoader(ds, batch_size=8, shuffle=True))
    with watch(model, opt) as w:
        for i, (x, y) in enumerate(loader):
            opt.zero_grad()
            F.mse_loss(model(x).squeeze(1), y).backward()
            opt.step()
            if i == 3:
                break
    return rules(w)


def fsdp2_no_distributed_sampler():
    return _fsdp(False)


def fsdp2_distributed_sampler():
    return _fsdp(True)


CASES = [name for name, f in list(globals().items()) if callable(f) and f.__module__ == "__main__"
         and not name.startswith("_") and name not in ("net", "dataset", "own_batches", "rules", "train", "main")]


def main() -> None:
    dist.init_process_group("gloo")
    out = Path(sys.argv[1])
    names = sys.argv[2:] or CASES
    found = {}
    for name in names:
        print(f"rank {dist.get_rank()}: {name}", file=sys.stderr, flush=True)  # where a run stopped, in the test's output
        try:
            found[name] = globals()[name]()
        except Exception as exc:  # recorded: the test names the case that broke
            found[name] = [f"raised {type(exc).__name__}: {exc}"[:300]]
    if dist.get_rank() == 0:
        (out / "doctor.json").write_text(json.dumps(found, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
