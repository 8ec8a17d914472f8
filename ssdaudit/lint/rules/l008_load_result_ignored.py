"""L008: ``model.load_state_dict(sd, strict=False)`` as a statement, so the missing and unexpected keys are lost,
in a training script or a function that trains (calls backward()). Library code that loads shards or checks the
keys itself (it names ``missing_keys`` / ``unexpected_keys``) is left alone: strict=False is deliberate there."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import RULES
from ssdaudit.lint.context import FileContext, Hit, dotted, method_name, receiver
from ssdaudit.lint.loops import is_backward, scopes

CODE = "L008"
TRIGGERS = ("strict=False",)


def _ignored_non_strict(call: cst.Call) -> bool:
    return method_name(call) == "load_state_dict" and any(
        a.keyword is not None and a.keyword.value == "strict" and isinstance(a.value, cst.Name) and a.value.value == "False"
        for a in call.args)


def check(ctx: FileContext) -> Iterator[Hit]:
    for scope in scopes(ctx):
        script = isinstance(scope.node, cst.Module)
        if not script and not any(isinstance(n, cst.Call) and is_backward(n) for n in scope.nodes):
            continue
        names = {dotted(n) for n in scope.nodes if isinstance(n, (cst.Name, cst.Attribute))}
        if any(n and ("missing" in n or "unexpected" in n) for n in names):
            continue
        for stmt in scope.nodes:
            if isinstance(stmt, cst.Expr) and isinstance(stmt.value, cst.Call) and _ignored_non_strict(stmt.value):
                call = stmt.value
                yield Hit(call, receiver(call) or "model", RULES[CODE].message.format(call=f"{receiver(call)}.load_state_dict"))
