"""L007: ``model.eval()`` in a loop that trains (calls backward()) with no ``model.train()`` in that loop."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import RULES
from ssdaudit.lint.context import FileContext, Hit, method_name, receiver
from ssdaudit.lint.loops import scopes, training_loops

CODE = "L007"
TRIGGERS = (".eval()",)


def _trains(call: cst.Call) -> bool:
    if method_name(call) != "train":
        return False
    return not call.args or not (isinstance(call.args[0].value, cst.Name) and call.args[0].value.value == "False")


def check(ctx: FileContext) -> Iterator[Hit]:
    reported: set[int] = set()
    for scope in scopes(ctx):
        for _loop, calls in training_loops(scope):
            trained = {receiver(c) for c in calls if _trains(c)}
            for call in calls:
                name = receiver(call)
                if method_name(call) == "eval" and not call.args and name and name not in trained and id(call) not in reported:
                    reported.add(id(call))
                    yield Hit(call, name, RULES[CODE].message.format(name=name))
