"""L002: ``loss.backward(); optimizer.zero_grad(); optimizer.step()`` in one block: the step applies zeros."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import RULES
from ssdaudit.lint.context import FileContext, Hit, dotted, statements
from ssdaudit.lint.loops import is_backward, is_optimizer_step, own_calls

CODE = "L002"
TRIGGERS = (".backward(",)


def _clears(call: cst.Call) -> bool:
    return "zero_grad" in (dotted(call.func) or "")


def check(ctx: FileContext) -> Iterator[Hit]:
    for block in statements(ctx.module):
        if not isinstance(block, cst.IndentedBlock) and not isinstance(block, cst.Module):
            continue
        # the calls of each statement directly in this block, in order (compound statements are their own blocks)
        seen_backward = False
        cleared: cst.Call | None = None
        for stmt in block.body:
            if not isinstance(stmt, cst.SimpleStatementLine):
                seen_backward, cleared = False, None
                continue
            for call in own_calls(stmt):
                if is_backward(call):
                    seen_backward, cleared = True, None
                elif _clears(call) and seen_backward:
                    cleared = call
                elif is_optimizer_step(call) and cleared is not None:
                    yield Hit(cleared, dotted(cleared.func) or "zero_grad",
                              RULES[CODE].message.format(call=dotted(cleared.func)))
                    seen_backward, cleared = False, None
