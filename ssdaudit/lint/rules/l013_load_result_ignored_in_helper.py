"""L013: ``model.load_state_dict(state, strict=False)`` as a bare statement (its result thrown away) in a helper
function that builds or loads a model (``build_model()``, ``load_model()``, ``get_model()``, ``create_net()``): the
missing and unexpected keys are lost for every caller.

Left alone: training functions and scripts (L008's), a load in a loop (shards, several checkpoints merged), a
function that names ``missing_keys`` / ``unexpected_keys`` (it checks the keys itself), one that builds the state
from the same model's ``state_dict()`` (its keys are the model's own: a deliberate partial load, as FSDP2's
meta-device loading does), and a kept result."""

from __future__ import annotations

import re
from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import RULES
from ssdaudit.lint.context import FileContext, Hit, dotted, method_name, receiver
from ssdaudit.lint.loops import is_backward, scopes

CODE = "L013"
TRIGGERS = ("strict=False",)
_HELPER = re.compile(r"^_*(build|create|make|get|load|init|setup|prepare|construct|restore)_?\w*$|model|net", re.IGNORECASE)


def _ignored_non_strict(call: cst.Call) -> bool:
    return method_name(call) == "load_state_dict" and any(
        a.keyword is not None and a.keyword.value == "strict" and isinstance(a.value, cst.Name) and a.value.value == "False"
        for a in call.args)


def check(ctx: FileContext) -> Iterator[Hit]:
    for scope in scopes(ctx):
        function = scope.node
        if not isinstance(function, cst.FunctionDef) or not _HELPER.search(function.name.value):
            continue
        if any(isinstance(n, cst.Call) and is_backward(n) for n in scope.nodes):
            continue  # training code: L008's
        names = {dotted(n) for n in scope.nodes if isinstance(n, (cst.Name, cst.Attribute))}
        if any(n and ("missing" in n or "unexpected" in n) for n in names):
            continue
        for stmt in scope.nodes:
            if isinstance(stmt, cst.Expr) and isinstance(stmt.value, cst.Call) and _ignored_non_strict(stmt.value):
                call = stmt.value
                model = receiver(call)
                if scope.enclosing_loops(stmt) or any(
                        isinstance(n, cst.Call) and n is not call and model and receiver(n) == model
                        and method_name(n) == "state_dict" for n in scope.nodes):
                    continue
                yield Hit(call, receiver(call) or "model", RULES[CODE].message.format(
                    call=f"{receiver(call)}.load_state_dict", function=function.name.value))
