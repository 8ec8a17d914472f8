"""L006: ``loss.requires_grad = True`` or ``loss.requires_grad_()`` (on a name that says it is a loss)."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import RULES
from ssdaudit.lint.context import FileContext, Hit, dotted, method_name, receiver, walk

CODE = "L006"
TRIGGERS = ("requires_grad",)


def _lossy(name: str | None) -> bool:
    return "loss" in (name or "").rpartition(".")[2].lower()


def check(ctx: FileContext) -> Iterator[Hit]:
    for n in walk(ctx.module):
        if isinstance(n, cst.Assign) and isinstance(n.value, cst.Name) and n.value.value == "True":
            for t in n.targets:
                if isinstance(t.target, cst.Attribute) and t.target.attr.value == "requires_grad" and _lossy(dotted(t.target.value)):
                    yield Hit(n, dotted(t.target.value) or "loss",
                              RULES[CODE].message.format(code=f"{dotted(t.target)} = True"))
        elif isinstance(n, cst.Call) and method_name(n) == "requires_grad_" and _lossy(receiver(n)):
            if not n.args or (isinstance(n.args[0].value, cst.Name) and n.args[0].value.value == "True"):
                yield Hit(n, receiver(n) or "loss", RULES[CODE].message.format(code=f"{receiver(n)}.requires_grad_()"))
