"""R011: ``nn.Parameter(...)``, or a fresh tensor with ``requires_grad=True`` (``torch.randn(..., requires_grad=True)``,
``torch.ones(n).requires_grad_()``), built inside forward() (or a method forward calls) and used there: a new weight
on every call, in no ``parameters()``. The runtime side (``ssdaudit params``) sees it when forward runs.

Not reported: a parameter assigned to ``self.<name>`` (or through ``self.register_parameter``): that registers it,
late; R010 reports state registered in forward. A local that forward never reads is dead code, not a weight."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.lint.context import FileContext, Hit, dotted, method_name, self_attr, walk
from ssdaudit.lint.scan import class_scans, registers

CODE = "R011"
TRIGGERS = ("Parameter(", "requires_grad")


def _is_true(node: cst.CSTNode) -> bool:
    return isinstance(node, cst.Name) and node.value == "True"


def fresh_weight(ctx: FileContext, node: cst.CSTNode) -> str | None:
    """How ``node`` makes a fresh trainable tensor ('nn.Parameter(...)', 'torch.randn(..., requires_grad=True)',
    '....requires_grad_()'), or None."""
    if not isinstance(node, cst.Call):
        return None
    if ctx.is_parameter_ctor(node):
        return f"{dotted(node.func)}(...)"
    if ctx.is_tensor_factory(node) and any(a.keyword is not None and a.keyword.value == "requires_grad"
                                           and _is_true(a.value) for a in node.args):
        return f"{dotted(node.func)}(..., requires_grad=True)"
    if (method_name(node) == "requires_grad_" and isinstance(node.func, cst.Attribute)
            and ctx.is_tensor_expr(node.func.value) and (not node.args or _is_true(node.args[0].value))):
        return f"{ctx.code(node.func.value).split('(', 1)[0]}(...).requires_grad_()"
    return None


def _registered(stmt: cst.CSTNode) -> bool:
    """``self.w = ...`` / ``self.w: T = ...`` or ``self.register_parameter(...)`` / ``setattr(self, ...)``."""
    if isinstance(stmt, cst.Assign):
        return any(self_attr(t.target) is not None for t in stmt.targets)
    if isinstance(stmt, cst.AnnAssign):
        return self_attr(stmt.target) is not None
    return isinstance(stmt, cst.Call) and registers(stmt)


def check(ctx: FileContext) -> Iterator[Hit]:
    for scan in class_scans(ctx):
        for name in scan.reachable("forward"):
            if name == "__init__":
                continue
            yield from _method(ctx, scan.cls.name.value, name, scan.nodes[name])


def _method(ctx: FileContext, cls: str, name: str, nodes: list[cst.CSTNode]) -> Iterator[Hit]:
    # nodes whose value registers what they hold (self.w = ..., self.register_parameter(...)): skipped with all below
    skipped: set[int] = set()
    locals_: dict[str, list[cst.CSTNode]] = {}  # local name -> the fresh weights assigned to it
    for n in nodes:
        if _registered(n):
            skipped.update(id(m) for m in walk(n))
    stores: set[int] = set()
    for n in nodes:
        if isinstance(n, cst.Assign) and id(n) not in skipped:
            for t in n.targets:
                stores.add(id(t.target))
                if isinstance(t.target, cst.Name) and fresh_weight(ctx, n.value):
                    locals_.setdefault(t.target.value, []).append(n.value)
    # a local is used when read (not where it is stored), other than by a statement that registers it
    read = {n.value for n in nodes if isinstance(n, cst.Name) and id(n) not in stores and id(n) not in skipped}
    local_values = {id(v) for vs in locals_.values() for v in vs}
    for n in nodes:
        if id(n) in skipped or not isinstance(n, cst.Call):
            continue
        how = fresh_weight(ctx, n)
        if how is None:
            continue
        if id(n) in local_values and not any(v is n for k, vs in locals_.items() if k in read for v in vs):
            continue  # assigned to a local that nothing reads, or only registers
        where = "forward()" if name == "forward" else f"self.{name}(), which forward() calls"
        yield Hit(n, f"{cls}.{name}", f"{how} is built inside {where}: a new, untrained weight on every call, in no "
                  "parameters() and no state_dict()")
