"""L011: a ``StepLR``/``MultiStepLR`` whose step size (milestones) comes from a setting counted in epochs, stepped
inside the batch loop, wherever in the file the two are (the schedule built in ``main()``, stepped in ``train()``).

A setting counts epochs when it is an argparse argument whose help mentions epochs (``--lr-step``, help 'epochs
between decays') or whose name does (``--decay-epochs``, ``args.lr_decay_epoch``, a local ``decay_epochs``). A size
computed from the number of batches (``args.lr_step * len(loader)``, ``* steps_per_epoch``) is counted in batches
and left alone, as is ``scheduler.step(epoch)``. The calls L003 reports (the same class, schedule and loop in one
scope) are left to it."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import RULES
from ssdaudit.lint.context import FileContext, Hit, children, dotted, method_name, receiver, walk
from ssdaudit.lint.loops import LOOPS, callee, is_backward, scopes
from ssdaudit.lint.rules import l003_epoch_scheduler_stepped_per_batch as l003

CODE = "L011"
TRIGGERS = ("StepLR",)  # MultiStepLR too
_SIZE_ARG = {"StepLR": "step_size", "MultiStepLR": "milestones"}
_IN_BATCHES = ("len(", "iter", "batch", "per_epoch", "num_steps", "total")
_BATCH_ITER = ("loader", "batch", "data", "dataset")


def _string(node: cst.CSTNode) -> str | None:
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    if isinstance(node, cst.ConcatenatedString):
        left, right = _string(node.left), _string(node.right)
        return left + right if left is not None and right is not None else None
    return None


def _epoch_arguments(ctx: FileContext) -> dict[str, str]:
    """argparse dest -> the option as written, for arguments counted in epochs (help or name says so)."""
    out: dict[str, str] = {}
    for node in walk(ctx.module):
        if not (isinstance(node, cst.Call) and method_name(node) == "add_argument"):
            continue
        options = [s for a in node.args if a.keyword is None and (s := _string(a.value)) is not None]
        if not options:
            continue
        keywords = {a.keyword.value: a.value for a in node.args if a.keyword is not None}
        dest = _string(keywords["dest"]) if "dest" in keywords else None
        if dest is None:
            long = [o for o in options if o.startswith("--")] or options
            dest = long[0].lstrip("-").replace("-", "_")
        help_text = (_string(keywords["help"]) or "") if "help" in keywords else ""
        lowered = help_text.lower()
        in_epochs = "epoch" in lowered and not any(w in lowered for w in ("iteration", "batches", "per epoch"))
        if in_epochs or "epoch" in dest.lower():
            out[dest] = f"{options[0]}" + (f", help '{help_text}'" if in_epochs else "")
    return out


def _size_expression(call: cst.Call) -> cst.BaseExpression | None:
    keyword = _SIZE_ARG[callee(call)]
    for a in call.args:
        if a.keyword is not None and a.keyword.value == keyword:
            return a.value
    positional = [a for a in call.args if a.keyword is None]
    return positional[1].value if len(positional) > 1 else None


def _epoch_setting(ctx: FileContext, expr: cst.BaseExpression, arguments: dict[str, str],
                   local: dict[str, cst.BaseExpression]) -> str | None:
    """How ``expr`` (a step size) is counted in epochs ("--lr-step, help 'epochs ...'", "args.decay_epochs"), or
    None when it is not, or is computed from batches. A local name is followed to its assignment, once."""
    if isinstance(expr, cst.Name) and expr.value in local:
        expr = local[expr.value]
    code = ctx.code(expr)
    if any(w in code.lower() for w in _IN_BATCHES):
        return None
    for node in walk(expr):
        if isinstance(node, cst.Attribute):
            name = node.attr.value
            if name in arguments:
                return arguments[name]
            if "epoch" in name.lower():
                return dotted(node) or name
        elif isinstance(node, cst.Name) and "epoch" in node.value.lower() and node.value not in ("epoch", "epochs"):
            return node.value
        elif isinstance(node, cst.SimpleString) and "epoch" in (_string(node) or "").lower():
            return ctx.code(node)  # config["lr_decay_epochs"]
    return None


def _batch_loop(loop: cst.For | cst.While, ctx: FileContext) -> bool:
    """A loop over batches: it iterates a loader (or batches, data), or backward() runs at its own level."""
    header = ctx.code(loop.iter).lower() if isinstance(loop, cst.For) else ""
    if "epoch" not in header and any(w in header for w in _BATCH_ITER):
        return True
    return any(isinstance(n, cst.Call) and is_backward(n) for n in _level_nodes(loop.body))


def _level_nodes(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """The nodes of a loop body, not entering nested loops, functions or classes."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed([c for c in children(n)
                               if not isinstance(c, (cst.FunctionDef, cst.ClassDef, cst.Lambda, *LOOPS))]))


def check(ctx: FileContext) -> Iterator[Hit]:
    arguments: dict[str, str] | None = None
    schedules: dict[str, tuple[str, str, cst.Call]] = {}  # last name of the target -> (kind, setting, the call)
    for scope in scopes(ctx):
        local = {t.target.value: n.value for n in scope.nodes if isinstance(n, cst.Assign)
                 for t in n.targets if isinstance(t.target, cst.Name)}
        for n in scope.nodes:
            if not (isinstance(n, cst.Assign) and isinstance(n.value, cst.Call) and callee(n.value) in _SIZE_ARG):
                continue
            expr = _size_expression(n.value)
            if expr is None:
                continue
            if arguments is None:
                arguments = _epoch_arguments(ctx)
            setting = _epoch_setting(ctx, expr, arguments, local)
            if setting is None:
                continue
            for t in n.targets:
                name = dotted(t.target)
                if name:
                    schedules[name.rpartition(".")[2]] = (callee(n.value), setting, n.value)
    if not schedules:
        return
    reported = {id(hit.node) for hit in l003.check(ctx)}
    for scope in scopes(ctx):
        for call in scope.calls():
            name = receiver(call)
            if method_name(call) != "step" or not name or any(a.keyword is None for a in call.args):
                continue
            schedule = schedules.get(name.rpartition(".")[2])
            loops = scope.enclosing_loops(call) if schedule is not None else []
            if schedule is None or not loops or id(call) in reported or not _batch_loop(loops[-1], ctx):
                continue
            kind, setting, built = schedule
            here = [n.value for n in scope.nodes if isinstance(n, cst.Assign)
                    and any(dotted(t.target) == name for t in n.targets)]
            if here and not any(v is built for v in here):
                continue  # this scope binds the name to another schedule (a warm-up stepped per batch)
            yield Hit(call, name, RULES[CODE].message.format(name=name, kind=kind, setting=setting))
