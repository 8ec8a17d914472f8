"""T005: a step with no backward into the optimizer's parameters since the previous one.

Two causes, told apart when the finding is made: a loss without a graph back to the model (computed under no_grad,
from detached outputs, ``requires_grad`` forced on the loss), or a backward that did reach parameters, only not
the optimizer's: they belong to another copy of the model (``copy.deepcopy`` after the optimizer was built, or the
optimizer built on one instance while another trains).
"""

from __future__ import annotations

import gc

from torch import nn

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.doctor.events import StepEvent


def other_copy(ctx: Context) -> nn.Module | None:
    """The outermost live module whose parameters have gradients, none of them the optimizer's, and whose
    parameter shapes are those of the optimizer's (another copy of the model), else None. Scans the garbage
    collector's objects: called once, when the finding is made."""
    shapes = sorted(tuple(p.shape) for p in ctx.params())
    modules: list[nn.Module] = [o for o in gc.get_objects() if issubclass(type(o), nn.Module)]
    children = {id(c) for m in modules for c in m.children()}
    for m in modules:
        if id(m) in children:
            continue
        params = list(m.parameters())
        if (params and any(p.grad is not None for p in params) and not any(id(p) in ctx.optimizer_ids for p in params)
                and sorted(tuple(p.shape) for p in params) == shapes):
            return m
    return None


class BackwardReachesNoParameter(Check):
    code = "T005"

    def on_step_pre(self, ctx: Context) -> None:
        if StepEvent.BACKWARD in ctx.events or ctx.closure_step or not ctx.trained_ids or ("T005", "optimizer") in ctx.found:
            return
        head = (f"{ctx.label}: no backward reached any of the optimizer's {len(ctx.trained_ids)} trainable parameter tensors "
                f"before step {ctx.current}")
        if ctx.loss_without_graph:
            ctx.report(self.code, f"{head}; {ctx.loss_without_graph} loss call(s) got inputs without an autograd graph "
                       "(computed under no_grad or detached)", subject="optimizer")
            return
        copy = other_copy(ctx)
        if copy is not None:
            ctx.report(self.code, f"{head}, but it reached those of another copy of the model (a "
                       f"{type(copy).__name__}): the optimizer holds parameters of another copy (deepcopy after the "
                       "optimizer?); build the optimizer from the model you train", subject="optimizer")
            return
        ctx.report(self.code, head, subject="optimizer")
