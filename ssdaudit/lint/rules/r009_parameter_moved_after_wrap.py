"""R009: ``self.w = nn.Parameter(...)`` followed by a tensor operation: a move (``.to(device)``, ``.cuda()``,
``.half()`` ...), a view or reshape (``.t()``, ``.view(...)``, ``.squeeze()``), indexing or arithmetic. Each returns
a plain non-leaf tensor (a move only when it moves something). Fix: operate on the tensor inside,
``nn.Parameter(t.to(device))``, ``nn.Parameter(w.t())``, ``nn.Parameter(w * 2)``."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import RULES, Fix
from ssdaudit.lint.context import FileContext, Hit
from ssdaudit.lint.scan import class_scans, operated_parameter

CODE = "R009"
_ATOMS = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.SimpleString, cst.List, cst.Tuple)


def check(ctx: FileContext) -> Iterator[Hit]:
    for scan in class_scans(ctx):
        for h in scan.unregistered(frozenset({"operated"})):
            returns = ("the move returns a plain tensor wherever it changes the device or dtype" if h.detail["moved"]
                       else "it returns a plain non-leaf tensor")
            yield Hit(h.node, h.symbol, RULES[CODE].message.format(attr=h.attr, op=h.detail["op"], returns=returns))


def _wrap_call(ctx: FileContext, node: cst.CSTNode) -> cst.Call | None:
    """The ``nn.Parameter(...)`` call the operation ``node`` applies to."""
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
        inner: cst.CSTNode = node.func.value
    elif isinstance(node, cst.Subscript):
        inner = node.value
    elif isinstance(node, cst.BinaryOperation):
        inner = node.left if ctx.is_parameter_ctor(node.left) else node.right
    elif isinstance(node, cst.UnaryOperation):
        inner = node.expression
    else:
        return None
    return inner if isinstance(inner, cst.Call) and ctx.is_parameter_ctor(inner) else None


def fix(ctx: FileContext, hit: Hit) -> Fix | None:
    op = hit.node
    found = operated_parameter(ctx, op)
    wrap = _wrap_call(ctx, op)
    if found is None or wrap is None or not wrap.args or wrap.args[0].keyword is not None or wrap.args[0].star:
        return None
    tensor = wrap.args[0].value
    if not isinstance(tensor, _ATOMS) and not tensor.lpar:
        tensor = tensor.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    # the operation, applied to the tensor instead of the Parameter (its own parentheses dropped: it is an argument)
    assert isinstance(op, cst.BaseExpression)
    operated = op.deep_replace(wrap, tensor)
    assert isinstance(operated, cst.BaseExpression)
    if getattr(operated, "lpar", None):
        operated = operated.with_changes(lpar=[], rpar=[])
    new = wrap.with_changes(args=[wrap.args[0].with_changes(value=operated), *wrap.args[1:]])
    return Fix(f"operate on the tensor inside: nn.Parameter(...{found[0].strip()})", True,
               (ctx.replace(op, ctx.code(new)),))
