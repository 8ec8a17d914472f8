"""L008: ``model.load_state_dict(sd, strict=False)`` as a statement: the missing and unexpected keys are lost."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import RULES
from ssdaudit.lint.context import FileContext, Hit, method_name, receiver, statements

CODE = "L008"
TRIGGERS = ("strict=False",)


def check(ctx: FileContext) -> Iterator[Hit]:
    for stmt in statements(ctx.module):
        if not (isinstance(stmt, cst.Expr) and isinstance(stmt.value, cst.Call)):
            continue
        call = stmt.value
        if method_name(call) != "load_state_dict":
            continue
        if any(a.keyword is not None and a.keyword.value == "strict" and isinstance(a.value, cst.Name)
               and a.value.value == "False" for a in call.args):
            yield Hit(call, receiver(call) or "model", RULES[CODE].message.format(call=f"{receiver(call)}.load_state_dict"))
