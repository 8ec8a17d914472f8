"""L010: ``loss.backward(retain_graph=True)`` as the only backward() of a training loop (innermost loop that
calls it): nothing uses the retained graph."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import RULES
from ssdaudit.lint.context import FileContext, Hit, receiver
from ssdaudit.lint.loops import inner_loops, is_backward, own_calls, scopes, training_loops

CODE = "L010"
TRIGGERS = ("retain_graph=True",)


def _retains(call: cst.Call) -> bool:
    return any(a.keyword is not None and a.keyword.value == "retain_graph" and isinstance(a.value, cst.Name)
               and a.value.value == "True" for a in call.args)


def check(ctx: FileContext) -> Iterator[Hit]:
    for scope in scopes(ctx):
        for loop, calls in training_loops(scope):
            if any(any(is_backward(c) for c in own_calls(inner)) for inner in inner_loops(loop)):
                continue  # the innermost loop with a backward() decides
            backwards = [c for c in calls if is_backward(c)]
            if len(backwards) == 1 and _retains(backwards[0]):
                yield Hit(backwards[0], receiver(backwards[0]) or "loss", RULES[CODE].message)
