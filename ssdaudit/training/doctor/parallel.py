"""``ParallelSetup``: how a watched optimizer's parameters are trained across processes, found once from local objects.

Found at the first optimizer step of a distributed run (a process group of two or more ranks), whichever object
the optimizer was built from (the ``DistributedDataParallel`` wrapper or the bare module first, the common order):

* the ``DistributedDataParallel`` wrappers whose module holds the optimizer's parameters, and, when none does, the
  wrappers of another module with exactly their shapes (the model re-created or copied after wrapping);
* whether the parameters are sharded (FSDP2 ``fully_shard``: ``DTensor`` parameters), so that ranks hold different
  values by design;
* the ``DataLoader``s drawing from a shuffling ``DistributedSampler``, with their length in batches.

One scan of the garbage collector's objects (as the runner does once per optimizer to find the model), only in a
distributed run. Holds weak references: the setup keeps nothing alive.
"""

from __future__ import annotations

import gc
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ssdaudit.training.gradflow.sharded import is_dtensor

if TYPE_CHECKING:
    from ssdaudit.training.doctor.context import Context


@dataclass(frozen=True)
class ParallelSetup:
    """``ddps``: weak references to the DDP wrappers of the optimizer's parameters. ``sharded``: FSDP2 (DTensor)
    parameters. ``samplers``: (weak reference to a shuffling ``DistributedSampler``, batches per epoch of its loader).
    ``elsewhere``: with no wrapper of the optimizer's parameters, the DDP wrappers of another module whose parameters
    have exactly their shapes (the trained model was re-created or copied after wrapping)."""

    ddps: tuple[weakref.ref[nn.Module], ...] = ()
    sharded: bool = False
    samplers: tuple[tuple[weakref.ref[Any], int], ...] = ()
    elsewhere: tuple[weakref.ref[nn.Module], ...] = ()

    def wrappers(self) -> list[nn.Module]:
        """The DDP wrappers still alive."""
        return [m for m in (r() for r in self.ddps) if m is not None]

    @property
    def kind(self) -> str:
        """``ddp``, ``fsdp`` or ``plain`` (no wrapper: hand-written data parallelism, or no data parallelism)."""
        return "ddp" if self.ddps else "fsdp" if self.sharded else "plain"


def _ddp_forward_types() -> tuple[type, ...]:
    try:
        from torch._dynamo.eval_frame import OptimizedModule
    except ImportError:  # pragma: no cover - a torch without dynamo
        return (nn.parallel.DistributedDataParallel,)
    return (nn.parallel.DistributedDataParallel, OptimizedModule)


# The module types whose forward can start a forward through DDP (``ddp_forward_of``): the wrapper, a compile of it.
DDP_FORWARD_TYPES = _ddp_forward_types()


def is_ddp(module: object) -> bool:
    return isinstance(module, nn.parallel.DistributedDataParallel)


@torch.compiler.disable  # type: ignore[untyped-decorator]
def discover(params: list[torch.Tensor], model: nn.Module | None) -> ParallelSetup:
    """The parallel setup of ``params`` (the optimizer's parameters; ``model`` the watched module, may be None)."""
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    ids = {id(p) for p in params}
    shapes = sorted(tuple(p.shape) for p in params)
    ddps: list[nn.Module] = []
    others: list[nn.Module] = []
    loaders: list[tuple[Any, int]] = []
    # once per distributed watch: wrappers and loaders that are garbage (an earlier model in unreachable cycles, not
    # collected yet) are not the run's (a stale DDP of the same shapes would read as "the model was re-created")
    gc.collect()
    for o in gc.get_objects():
        t = type(o)
        if issubclass(t, nn.parallel.DistributedDataParallel):
            inner = getattr(o, "module", None)
            if not isinstance(inner, nn.Module):
                continue
            held = list(inner.parameters())
            if any(id(p) in ids for p in held):
                ddps.append(o)
            elif held and sorted(tuple(p.shape) for p in held) == shapes:
                others.append(o)
        elif issubclass(t, DataLoader):
            sampler = getattr(o, "sampler", None)
            if not isinstance(sampler, DistributedSampler):
                sampler = getattr(getattr(o, "batch_sampler", None), "sampler", None)
            if isinstance(sampler, DistributedSampler) and getattr(sampler, "shuffle", False):
                try:
                    loaders.append((sampler, len(o)))
                except TypeError:
                    pass
    sharded = any(is_dtensor(p) for p in params)
    return ParallelSetup(tuple(weakref.ref(d) for d in ddps), sharded,
                         tuple((weakref.ref(s), n) for s, n in loaders if n > 0),
                         () if ddps else tuple(weakref.ref(d) for d in others))


def setup_of(ctx: "Context") -> ParallelSetup | None:
    """The watch's ``ParallelSetup``, found at the first call in a distributed run (world size 2 or more) and kept in
    ``ctx.parallel``; None in a single-process run."""
    if ctx.parallel is None:
        from ssdaudit.training.doctor.ranks import world

        if world()[1] < 2:
            return None
        ctx.parallel = discover(ctx.params(), ctx.model)
    setup: ParallelSetup = ctx.parallel
    return setup


def ddp_forward_of(module: nn.Module) -> nn.Module | None:
    """The ``DistributedDataParallel`` wrapper whose training forward starts with ``module``'s forward (the wrapper
    itself, or a ``torch.compile`` of it) while gradients are enabled; else None. Called for every module's forward:
    two type checks."""
    if is_ddp(module):
        return module if torch.is_grad_enabled() else None
    inner = module._modules.get("_orig_mod")  # torch.compile(ddp)
    return inner if inner is not None and is_ddp(inner) and torch.is_grad_enabled() else None


def is_model_forward(ctx: "Context", module: nn.Module) -> bool:
    """Whether ``module``'s forward is a training forward (gradients enabled) of the watched model: the model, its DDP
    wrapper, or a ``torch.compile`` of either."""
    if ctx.model is None or not torch.is_grad_enabled():
        return False
    inner = module._modules.get("_orig_mod")
    if inner is not None:
        module = inner
    return module is ctx.model or (is_ddp(module) and module._modules.get("module") is ctx.model)


def fingerprint(args: tuple[Any, ...]) -> torch.Tensor | None:
    """(3,) float64 on the input's device: numel, sum and weighted sum of the first tensor among a forward's
    positional arguments (one level into lists, tuples and dicts); None when there is none. No host read."""
    for a in args:
        items = a.values() if isinstance(a, dict) else a if isinstance(a, (list, tuple)) else (a,)
        for t in items:
            if isinstance(t, torch.Tensor) and not is_dtensor(t) and t.numel() > 0:
                d = t.detach().reshape(-1).to(torch.float64)
                w = torch.arange(1, d.numel() + 1, device=d.device, dtype=torch.float64).remainder_(1009)
                return torch.stack([torch.tensor(float(d.numel()), dtype=torch.float64, device=d.device),
                                    d.sum(), (d * w).sum()])
    return None
