"""L004: softmax or log_softmax applied to the logits given to F.cross_entropy / nn.CrossEntropyLoss (directly or
through a local name, on any path: a softmax in one branch of an ``if`` that reaches the loss counts, a value
reassigned before the loss does not); log_softmax is only redundant there (a note)."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import Severity
from ssdaudit.lint.context import FileContext, Hit, dotted, statements, walk
from ssdaudit.lint.loops import callee, reaching_values, scopes

CODE = "L004"
TRIGGERS = ("cross_entropy", "CrossEntropyLoss")


def _softmax(ctx: FileContext, node: cst.CSTNode) -> str | None:
    """'softmax' / 'log_softmax' when ``node`` computes one (F.softmax(x), torch.softmax, x.softmax(), nn.Softmax()(x))."""
    if not isinstance(node, cst.Call):
        return None
    func = node.func.func if isinstance(node.func, cst.Call) else node.func
    name = func.attr.value if isinstance(func, cst.Attribute) else (dotted(func) or "")
    return {"softmax": "softmax", "Softmax": "softmax", "log_softmax": "log_softmax",
            "LogSoftmax": "log_softmax"}.get(name)


def _is_ce(call: cst.Call, losses: set[str | None]) -> bool:
    return callee(call) == "cross_entropy" or dotted(call.func) in losses or (
        isinstance(call.func, cst.Call) and callee(call.func) == "CrossEntropyLoss")


def check(ctx: FileContext) -> Iterator[Hit]:
    losses = {dotted(t.target) for n in statements(ctx.module) if isinstance(n, cst.Assign)
              and isinstance(n.value, cst.Call) and callee(n.value) == "CrossEntropyLoss" for t in n.targets}
    # one pass for the candidates; the scopes (where a local name was assigned) only when a name is passed
    nodes = list(walk(ctx.module))
    probabilities = {t.target.value for n in nodes if isinstance(n, cst.Assign) and _softmax(ctx, n.value)
                     for t in n.targets if isinstance(t.target, cst.Name)}
    candidates = [c for c in nodes if isinstance(c, cst.Call) and _is_ce(c, losses) and c.args
                  and c.args[0].keyword is None and (_softmax(ctx, c.args[0].value) or (
                      isinstance(c.args[0].value, cst.Name) and c.args[0].value.value in probabilities))]
    if not candidates:
        return
    wanted = {id(c) for c in candidates}
    for scope in scopes(ctx):
        for call in scope.calls():
            if id(call) not in wanted:
                continue
            arg = call.args[0].value
            defs = reaching_values(scope.node, call) or {}
            if isinstance(call.func, cst.Name) and defs.get(call.func.value) and not any(
                    isinstance(v, cst.Call) and callee(v) == "CrossEntropyLoss" for v in defs[call.func.value]):
                continue  # a local loss_fct that is another loss here (the file names a CE loss the same elsewhere)
            kind = _softmax(ctx, arg)
            if kind is None and isinstance(arg, cst.Name):
                # the values that reach the call on some path: a softmax in one branch of an if feeds the loss there
                reaching = defs.get(arg.value, [])
                kinds = {_softmax(ctx, v) for v in reaching}
                kind = "softmax" if "softmax" in kinds else "log_softmax" if "log_softmax" in kinds else None
            if kind is None:
                continue
            if kind == "softmax":
                yield Hit(call, "cross_entropy", "softmax before cross_entropy: the loss applies log_softmax itself, "
                          "so it treats probabilities as logits and its gradients shrink")
            else:
                yield Hit(call, "cross_entropy", "log_softmax before cross_entropy: redundant (cross_entropy applies "
                          "it), harmless; F.nll_loss takes log-probabilities", Severity.INFO)
