"""L001: a loop calls backward() and optimizer.step() but nothing in it clears the gradients."""

from __future__ import annotations

from collections.abc import Iterator

from ssdaudit.core.findings import RULES
from ssdaudit.lint.context import FileContext, Hit, receiver
from ssdaudit.lint.loops import clears_gradients, inner_loops, is_backward, is_optimizer_step, own_calls, scopes, training_loops

CODE = "L001"
TRIGGERS = (".backward(",)


def check(ctx: FileContext) -> Iterator[Hit]:
    for scope in scopes(ctx):
        for loop, calls in training_loops(scope):
            steps = [c for c in calls if is_optimizer_step(c)]
            if not steps or clears_gradients(loop.body):
                continue
            # the innermost loop that holds both reports it (an outer epoch loop would repeat the finding)
            if any(any(is_backward(c) for c in own_calls(inner)) and any(is_optimizer_step(c) for c in own_calls(inner))
                   for inner in inner_loops(loop)):
                continue
            opt = receiver(steps[0]) or "optimizer"
            yield Hit(steps[0], opt, RULES[CODE].message.format(opt=opt))
