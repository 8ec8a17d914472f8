"""T024: a backward reaches the parameters of a ``DistributedDataParallel`` module whose wrapper's forward did not run
in that step (``ddp.module(x)``, or the bare model called instead of the wrapper).

Local evidence, on each rank alone: DDP averages gradients only for a backward prepared by its own forward, so a
step whose backward reached the wrapped parameters with no forward of the wrapper (with gradients enabled) since the
previous step trains each rank on its own data only. Works whether the optimizer was built from the wrapper or from
the bare module, and on a rank whose doctor is the only one attached.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.doctor.events import StepEvent
from ssdaudit.training.doctor.parallel import DDP_FORWARD_TYPES, ddp_forward_of, setup_of


class DdpForwardBypassed(Check):
    code = "T024"
    module_types = DDP_FORWARD_TYPES  # the wrapper (or its compile): where the forward through DDP starts
    module_roots = False
    every_call = True  # a forward through the wrapper on any step: its absence before a backward is the finding

    def __init__(self) -> None:
        self.forwarded: set[int] = set()  # ids of the DDP wrappers whose forward ran (with grad) since the last step

    def on_module_pre(self, ctx: Context, module: nn.Module, args: tuple[Any, ...], root: bool) -> None:
        ddp = ddp_forward_of(module)
        if ddp is not None:
            self.forwarded.add(id(ddp))

    def on_step_pre(self, ctx: Context) -> None:
        forwarded, self.forwarded = self.forwarded, set()
        if StepEvent.BACKWARD not in ctx.events or ctx.closure_step:
            return
        setup = setup_of(ctx)
        if setup is None:
            return
        for ddp in setup.wrappers():
            if id(ddp) in forwarded:
                continue
            inner = ddp.module
            assert isinstance(inner, nn.Module)
            held = [p for p in inner.parameters() if id(p) in ctx.trained_ids]
            if not held:
                continue
            name = ctx.name_of(inner)
            ctx.report(self.code, f"step {ctx.current}: a backward reached the {len(held)} parameter tensors of "
                       f"`{name}` while its DistributedDataParallel wrapper's forward did not run (the module was "
                       "called directly, e.g. `ddp.module(x)`): DDP averaged no gradient, each rank trained on its "
                       "own batches and the replicas drift apart", subject="replicas",
                       params=sum(p.numel() for p in held))
