"""L009: ``model.module(x)`` (or ``model.module.forward(x)``) in a training loop, where ``model`` was wrapped in
DistributedDataParallel in the same function or script."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import RULES
from ssdaudit.lint.context import FileContext, Hit, dotted
from ssdaudit.lint.loops import assigned_from, callee, scopes, training_loops

CODE = "L009"
TRIGGERS = (".module(", ".module.forward(")


def check(ctx: FileContext) -> Iterator[Hit]:
    for scope in scopes(ctx):
        wrapped = assigned_from(scope.nodes, lambda c: callee(c) in ("DistributedDataParallel", "DDP"))
        if not wrapped:
            continue
        reported: set[int] = set()
        for _loop, calls in training_loops(scope):
            for call in calls:
                func = dotted(call.func) or ""
                for name in wrapped:
                    if func in (f"{name}.module", f"{name}.module.forward") and id(call) not in reported:
                        reported.add(id(call))
                        yield Hit(call, name, RULES[CODE].message.format(name=name))
