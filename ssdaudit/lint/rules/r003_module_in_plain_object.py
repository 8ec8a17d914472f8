"""R003: a module constructor passed into a plain object (``SimpleNamespace``, ``partial``, ``namedtuple``).
Fix: ``SimpleNamespace(a=M(...), ...)`` becomes ``nn.ModuleDict(dict(a=M(...), ...))``, whose submodules are
read as attributes too (``self.heads.a``)."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import Fix
from ssdaudit.lint.context import FileContext, Hit, dotted
from ssdaudit.lint.scan import class_scans

CODE = "R003"


def check(ctx: FileContext) -> Iterator[Hit]:
    for scan in class_scans(ctx):
        for h in scan.unregistered(frozenset({"object"})):
            yield Hit(h.node, h.symbol, f"self.{h.attr} = {h.detail['call']}(...) wraps a module in a plain object: it "
                      "will not be registered", data=h.attr)


def fix(ctx: FileContext, hit: Hit) -> Fix | None:
    call = hit.node
    if not (isinstance(call, cst.Call) and (dotted(call.func) or "").rpartition(".")[2] == "SimpleNamespace"):
        return None  # partial and namedtuple have no registering equivalent
    if not call.args or any(a.keyword is None or not ctx.is_module_ctor(a.value) for a in call.args):
        return None
    prefix = ctx.nn_prefix()
    if prefix is None:
        return None
    edits = [ctx.replace(call.func, f"{prefix}ModuleDict(dict"), ctx.insert_after(call, ")")]
    return Fix(f"make self.{hit.data} an nn.ModuleDict (attribute access keeps working)", True, tuple(edits))
