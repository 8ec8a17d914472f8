"""L003: ``scheduler.step()`` of an epoch-based schedule inside the batch loop (a loop in a loop, or a loop over
a data loader). Schedules sized in steps (``T_max=epochs * len(loader)``) are left alone."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import RULES
from ssdaudit.lint.context import FileContext, Hit, method_name, receiver
from ssdaudit.lint.loops import assigned_from, callee, scopes

CODE = "L003"
EPOCH_SCHEDULERS = {"StepLR", "MultiStepLR", "CosineAnnealingLR", "ExponentialLR", "PolynomialLR",
                    "CosineAnnealingWarmRestarts", "MultiplicativeLR"}
TRIGGERS = tuple(EPOCH_SCHEDULERS)
_STEP_SIZED = ("len(", "iter", "step", "batch", "total", "num_training")


def _batch_loop(loop: cst.For | cst.While, ctx: FileContext) -> bool:
    return isinstance(loop, cst.For) and any(w in ctx.code(loop.iter).lower() for w in ("loader", "batch"))


def check(ctx: FileContext) -> Iterator[Hit]:
    for scope in scopes(ctx):
        schedulers = assigned_from(scope.nodes, lambda c: callee(c) in EPOCH_SCHEDULERS)
        # a schedule whose arguments are counted in steps is meant to be stepped per batch
        schedulers = {name: call for name, call in schedulers.items()
                      if not any(w in ctx.code(a.value).lower() for a in call.args[1:] for w in _STEP_SIZED)}
        if not schedulers:
            continue
        for call in scope.calls():
            name = receiver(call)
            if method_name(call) != "step" or name not in schedulers:
                continue
            loops = scope.enclosing_loops(call)
            if len(loops) >= 2 or (loops and _batch_loop(loops[-1], ctx)):
                yield Hit(call, name, RULES[CODE].message.format(name=name, kind=callee(schedulers[name])))
