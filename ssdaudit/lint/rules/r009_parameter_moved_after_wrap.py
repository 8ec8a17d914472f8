"""R009: ``self.w = nn.Parameter(...).to(device)`` (or ``.cuda()``, ``.half()`` ...): the move returns a plain
tensor. Fix: move the tensor inside, ``nn.Parameter(t.to(device))``."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import Fix
from ssdaudit.lint.context import FileContext, Hit
from ssdaudit.lint.scan import class_scans

CODE = "R009"
_ATOMS = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.SimpleString, cst.List, cst.Tuple)


def check(ctx: FileContext) -> Iterator[Hit]:
    for scan in class_scans(ctx):
        for h in scan.unregistered(CODE):
            yield Hit(h.node, h.symbol, h.message)


def fix(ctx: FileContext, hit: Hit) -> Fix | None:
    move = hit.node
    if not (isinstance(move, cst.Call) and isinstance(move.func, cst.Attribute) and isinstance(move.func.value, cst.Call)):
        return None
    wrap = move.func.value
    if not wrap.args or wrap.args[0].keyword is not None or wrap.args[0].star:
        return None
    tensor = wrap.args[0].value
    if not isinstance(tensor, _ATOMS) and not tensor.lpar:
        tensor = tensor.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    moved = cst.Call(func=cst.Attribute(value=tensor, attr=move.func.attr), args=move.args)
    new = wrap.with_changes(args=[wrap.args[0].with_changes(value=moved), *wrap.args[1:]])
    return Fix(f"move the tensor inside: nn.Parameter(....{move.func.attr.value}(...))", True,
               (ctx.replace(move, ctx.code(new)),))
