"""T029: ``optimizer.step()`` after a step whose every forward through ``DistributedDataParallel`` ran inside
``no_sync()`` (gradient accumulation that never leaves ``no_sync``): no gradient of that step was averaged.

Local evidence: DDP decides at forward time (``require_backward_grad_sync``) whether the next backward all-reduces;
the last forward of the wrapper before the step must run outside ``no_sync()``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.doctor.events import StepEvent
from ssdaudit.training.doctor.parallel import DDP_FORWARD_TYPES, ddp_forward_of, setup_of


class DdpNoSyncStep(Check):
    code = "T029"
    module_types = DDP_FORWARD_TYPES  # the wrapper (or its compile): where the forward through DDP starts
    module_roots = False
    every_call = True  # each forward through the wrapper: whether it synchronises

    def __init__(self) -> None:
        self.synced: dict[int, bool] = {}  # DDP wrapper id -> whether its last forward (with grad) will sync

    def on_module_pre(self, ctx: Context, module: nn.Module, args: tuple[Any, ...], root: bool) -> None:
        ddp = ddp_forward_of(module)
        if ddp is not None:
            self.synced[id(ddp)] = bool(getattr(ddp, "require_backward_grad_sync", True))

    def on_step_pre(self, ctx: Context) -> None:
        synced, self.synced = self.synced, {}
        if StepEvent.BACKWARD not in ctx.events or ctx.closure_step or all(synced.values()):
            return
        setup = setup_of(ctx)
        if setup is None:
            return
        for ddp in setup.wrappers():
            if synced.get(id(ddp), True):
                continue
            name = ctx.name_of(ddp.module)
            ctx.report(self.code, f"step {ctx.current}: optimizer.step() ran after the last forward of "
                       f"`{name}`'s DistributedDataParallel wrapper ran inside no_sync(): that step's gradients were "
                       "never averaged across ranks, and the replicas drift apart", subject="replicas")
