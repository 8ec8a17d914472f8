"""What the training-loop rules (L) share: the scopes of a file (the module's top level and every function), the
loops in each, and the calls under a node in source order without entering nested functions or classes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


# --- branches: what holds on every path through a block, and which assignments reach a point ------------------


def _block(node: cst.CSTNode | None) -> list[cst.CSTNode]:
    """The statements of a suite (an indented block, or ``if x: a; b`` on one line)."""
    if node is None:
        return []
    if isinstance(node, cst.IndentedBlock):
        return list(node.body)
    if isinstance(node, cst.SimpleStatementSuite):
        return list(node.body)
    return [node]


def on_every_path(body: cst.CSTNode, predicate: Callable[[cst.Call], bool]) -> bool:
    """Whether every path through ``body`` (a suite) runs a call ``predicate`` accepts: both branches of an
    ``if``/``else`` must, an ``if`` without ``else`` or a loop body (it may run zero times) does not count; ``with``
    and ``try`` bodies do. Nested functions are not entered."""
    return any(_always(stmt, predicate) for stmt in _block(body))


def _always(stmt: cst.CSTNode, predicate: Callable[[cst.Call], bool]) -> bool:
    if isinstance(stmt, cst.If):
        other = stmt.orelse
        if other is None:
            return False
        alternative = _always(other, predicate) if isinstance(other, cst.If) else on_every_path(other.body, predicate)
        return on_every_path(stmt.body, predicate) and alternative
    if isinstance(stmt, (cst.For, cst.While)):
        return False
    if isinstance(stmt, (cst.With, cst.Try)):
        return on_every_path(stmt.body, predicate) or (
            isinstance(stmt, cst.Try) and stmt.finalbody is not None and on_every_path(stmt.finalbody.body, predicate))
    if isinstance(stmt, _NESTED):
        return False
    return any(predicate(c) for c in own_calls(stmt))


def guarding_tests(body: cst.CSTNode, target: cst.CSTNode) -> list[cst.BaseExpression]:
    """The tests of the ``if``/``elif`` statements under ``body`` whose branches (either arm) hold ``target``,
    innermost first; [] when none does (or ``target`` is not under ``body``)."""
    parents: dict[int, cst.CSTNode] = {}
    stack = [body]
    while stack:
        n = stack.pop()
        for c in children(n):
            if not isinstance(c, _NESTED):
                parents[id(c)] = n
                stack.append(c)
    out: list[cst.BaseExpression] = []
    node: cst.CSTNode = target
    while id(node) in parents:
        parent = parents[id(node)]
        if isinstance(parent, cst.If) and node is not parent.test:
            out.append(parent.test)  # in its body, or in its orelse (an Else, or an elif)
        node = parent
    return out


class _Found(Exception):
    def __init__(self, defs: dict[str, list[cst.BaseExpression]]) -> None:
        self.defs = defs


def reaching_values(root: cst.CSTNode, target: cst.CSTNode) -> dict[str, list[cst.BaseExpression]] | None:
    """The values that may be bound to each local name where ``target`` runs (its statement, in ``root``: a module
    or a function): an assignment on one branch of an ``if`` reaches beside the other branch's; one in a loop body
    reaches the top of the loop too. None when ``target`` is not found."""
    body = root.body.body if isinstance(root, cst.FunctionDef) and isinstance(root.body, cst.IndentedBlock) else (
        root.body if isinstance(root, cst.Module) else [])
    try:
        _flow(list(body), {}, target)
    except _Found as found:
        return found.defs
    return None


def _merge(*states: dict[str, list[cst.BaseExpression]]) -> dict[str, list[cst.BaseExpression]]:
    out: dict[str, list[cst.BaseExpression]] = {}
    for state in states:
        for name, values in state.items():
            known = out.setdefault(name, [])
            known.extend(v for v in values if not any(v is k for k in known))
    return out


def _flow(stmts: list[cst.CSTNode], state: dict[str, list[cst.BaseExpression]],
          target: cst.CSTNode) -> dict[str, list[cst.BaseExpression]]:
    for stmt in stmts:
        if isinstance(stmt, _NESTED):
            continue
        if isinstance(stmt, cst.If):
            branches: list[dict[str, list[cst.BaseExpression]]] = []
            node: cst.If | cst.Else | None = stmt
            while isinstance(node, cst.If):
                if any(n is target for n in own_nodes(node.test)):
                    raise _Found(state)
                branches.append(_flow(_block(node.body), dict(state), target))
                node = node.orelse
            branches.append(_flow(_block(node.body), dict(state), target) if isinstance(node, cst.Else) else state)
            state = _merge(*branches)
        elif isinstance(stmt, (cst.For, cst.While)):
            header = stmt.iter if isinstance(stmt, cst.For) else stmt.test
            if any(n is target for n in own_nodes(header)):
                raise _Found(state)
            # a first pass for what the body assigns, then the body again with those reaching its top
            once = _flow(_block(stmt.body), dict(state), _Never)
            state = _merge(state, _flow(_block(stmt.body), _merge(state, once), target))
            if stmt.orelse is not None:
                state = _flow(_block(stmt.orelse.body), state, target)
        elif isinstance(stmt, (cst.With, cst.Try)):
            if isinstance(stmt, cst.With) and any(any(n is target for n in own_nodes(i)) for i in stmt.items):
                raise _Found(state)
            after = _flow(_block(stmt.body), state, target)
            if isinstance(stmt, cst.Try):
                after = _merge(after, *[_flow(_block(h.body), dict(state), target) for h in stmt.handlers])
                if stmt.orelse is not None:
                    after = _flow(_block(stmt.orelse.body), after, target)
                if stmt.finalbody is not None:
                    after = _flow(_block(stmt.finalbody.body), after, target)
            state = after
        else:
            if any(n is target for n in own_nodes(stmt)):
                raise _Found(state)
            for line in (stmt.body if isinstance(stmt, cst.SimpleStatementLine) else [stmt]):
                if isinstance(line, cst.Assign):
                    state = dict(state)
                    for t in line.targets:
                        if isinstance(t.target, cst.Name):
                            state[t.target.value] = [line.value]
    return state


_Never = cst.Pass()  # a node no statement holds: _flow runs a block through without stopping
