"""What the training-loop rules (L) share: the scopes of a file (the module's top level and every function), the
loops in each, and the calls under a node in source order without entering nested functions or classes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import libcst as cst

from ssdaudit.lint.context import FileContext, children, dotted, method_name, receiver, statements, walk

_NESTED = (cst.FunctionDef, cst.ClassDef, cst.Lambda)
LOOPS = (cst.For, cst.While)


def own_nodes(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """The nodes under ``node`` in source order, not entering functions, classes or lambdas defined below it."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed([c for c in children(n) if not isinstance(c, _NESTED)]))


def own_calls(node: cst.CSTNode) -> list[cst.Call]:
    return [n for n in own_nodes(node) if isinstance(n, cst.Call)]


@dataclass
class Scope:
    """A function (or the module's top level) with its own nodes in source order."""

    node: cst.CSTNode
    nodes: list[cst.CSTNode]

    def loops(self) -> list[cst.For | cst.While]:
        return [n for n in self.nodes if isinstance(n, LOOPS)]

    def calls(self) -> list[cst.Call]:
        return [n for n in self.nodes if isinstance(n, cst.Call)]

    def enclosing_loops(self, target: cst.CSTNode) -> list[cst.For | cst.While]:
        """The loops of this scope that contain ``target``, outermost first."""
        return [loop for loop in self.loops() if any(n is target for n in own_nodes(loop.body))]


def scopes(ctx: FileContext) -> list[Scope]:
    """The module's top level and every function of the file, computed once per file."""
    cached = ctx.cache.get("loop_scopes")
    if cached is None:
        roots: list[cst.CSTNode] = [ctx.module] + [n for n in statements(ctx.module) if isinstance(n, cst.FunctionDef)]
        cached = [Scope(r, list(own_nodes(r.body if isinstance(r, cst.FunctionDef) else r))) for r in roots]
        ctx.cache["loop_scopes"] = cached
    assert isinstance(cached, list)
    return cached


def is_backward(call: cst.Call) -> bool:
    """``loss.backward()``, ``scaler.scale(loss).backward()``, ``accelerator.backward(loss)``."""
    return method_name(call) == "backward"


def is_optimizer_step(call: cst.Call) -> bool:
    """``optimizer.step()`` / ``opt.step()`` / ``self.optimizer.step()``, or ``scaler.step(optimizer)``: a step
    without a closure (LBFGS's closure clears the gradients itself)."""
    if method_name(call) != "step":
        return False
    last = (receiver(call) or "").rpartition(".")[2].lower()
    if "scaler" in last:
        return len(call.args) == 1
    return "opt" in last and not call.args


def clears_gradients(node: cst.CSTNode) -> bool:
    """Anything under ``node`` (nested functions included) that clears gradients: ``zero_grad()``, a
    ``.grad = None``, ``.grad.zero_()``, a helper whose name says it clears them."""
    for n in walk(node):
        if isinstance(n, cst.Call):
            name = (dotted(n.func) or "").lower()
            if "zero_grad" in name or "clear_grad" in name or name.endswith(("grad.zero_", "grad.detach_")):
                return True
        elif isinstance(n, cst.Assign) and any(isinstance(t.target, cst.Attribute) and t.target.attr.value == "grad"
                                               for t in n.targets):
            return True
    return False


def assigned_from(scope_nodes: list[cst.CSTNode], predicate: "object") -> dict[str, cst.Call]:
    """dotted target -> the call assigned to it, for assignments whose value is a call ``predicate`` accepts."""
    out: dict[str, cst.Call] = {}
    for n in scope_nodes:
        if isinstance(n, cst.Assign) and isinstance(n.value, cst.Call) and predicate(n.value):  # type: ignore[operator]
            for t in n.targets:
                name = dotted(t.target)
                if name:
                    out[name] = n.value
    return out


def callee(call: cst.Call) -> str:
    """The last name of what is called: ``StepLR`` for ``torch.optim.lr_scheduler.StepLR(...)``."""
    return (dotted(call.func) or "").rpartition(".")[2]


def inner_loops(loop: cst.For | cst.While) -> list[cst.For | cst.While]:
    """The loops inside ``loop``'s body (its own code: not in nested functions)."""
    return [n for n in own_nodes(loop.body) if isinstance(n, LOOPS)]


def training_loops(scope: Scope) -> list[tuple[cst.For | cst.While, list[cst.Call]]]:
    """The loops of ``scope`` that call backward() (with their own calls), innermost ones included."""
    out = []
    for loop in scope.loops():
        calls = own_calls(loop.body)
        if any(is_backward(c) for c in calls):
            out.append((loop, calls))
    return out
