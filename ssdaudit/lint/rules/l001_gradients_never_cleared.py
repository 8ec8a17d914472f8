"""L001: a loop calls backward() and optimizer.step() but nothing in it clears the gradients; or (a warning) it
steps on every path through the loop body while its only clears sit in branches some paths skip (``if epoch > 0:
opt.zero_grad()``, a clear in one arm of ``if use_amp: ... else: ...``). Gradient accumulation (a step under
``if i % k == 0`` as well as the clear) is left alone: a step on some paths only is not judged."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import RULES, Severity
from ssdaudit.lint.context import FileContext, Hit, dotted, receiver, walk
from ssdaudit.lint.loops import (clears_gradients, guarding_tests, inner_loops, is_backward, is_optimizer_step,
                                 on_every_path, own_calls, own_nodes, scopes, training_loops)

CODE = "L001"
TRIGGERS = (".backward(",)


def _clear_call(call: cst.Call) -> bool:
    return clears_gradients(call)


def _clears(node: cst.CSTNode) -> list[cst.CSTNode]:
    """The clearing statements/calls of ``node``'s own code (nested functions left out)."""
    out: list[cst.CSTNode] = []
    for n in own_nodes(node):
        if isinstance(n, cst.Call) and clears_gradients(n):
            out.append(n)
        elif isinstance(n, cst.Assign) and clears_gradients(n):
            out.append(n)
    return out


def _clears_on_every_path(body: cst.CSTNode) -> bool:
    if on_every_path(body, _clear_call):
        return True
    # ``p.grad = None`` assignments are statements, not calls: a loop that holds one counts as clearing always
    return any(isinstance(n, cst.Assign) and clears_gradients(n) for n in own_nodes(body))


def check(ctx: FileContext) -> Iterator[Hit]:
    for scope in scopes(ctx):
        for loop, calls in training_loops(scope):
            steps = [c for c in calls if is_optimizer_step(c)]
            if not steps:
                continue
            # the innermost loop that holds both reports it (an outer epoch loop would repeat the finding)
            if any(any(is_backward(c) for c in own_calls(inner)) and any(is_optimizer_step(c) for c in own_calls(inner))
                   for inner in inner_loops(loop)):
                continue
            opt = receiver(steps[0]) or "optimizer"
            if not clears_gradients(loop.body):
                yield Hit(steps[0], opt, RULES[CODE].message.format(opt=opt))
                continue
            clears = _clears(loop.body)
            if not clears or not on_every_path(loop.body, is_optimizer_step) or _clears_on_every_path(loop.body):
                continue  # clears only in a closure, a step on some paths only (accumulation), or a clear on every path
            # a step on every iteration with a clear on some (even `if i % k == 0`, which looks like accumulation):
            # accumulation steps only every k iterations too, so here the gradients pile up and are applied each time
            tests = [t for c in clears for t in guarding_tests(loop.body, c)]
            shown = ctx.code(tests[0]).strip() if tests else "a branch"
            yield Hit(steps[0], opt, f"{dotted(steps[0].func)}() runs on every iteration, but the gradients are cleared "
                      f"only on some paths (under `{shown}`): on the others they add up over the iterations",
                      Severity.WARNING)
