"""L005: clip_grad_norm_ / clip_grad_value_ in a function that scales its loss with a GradScaler, and no
``scaler.unscale_(...)`` before the clip."""

from __future__ import annotations

from collections.abc import Iterator

from ssdaudit.core.findings import RULES
from ssdaudit.lint.context import FileContext, Hit, dotted, method_name, receiver
from ssdaudit.lint.loops import callee, scopes

CODE = "L005"
TRIGGERS = ("clip_grad_norm_", "clip_grad_value_")


def check(ctx: FileContext) -> Iterator[Hit]:
    if "GradScaler" not in ctx.source:
        return
    for scope in scopes(ctx):
        calls = scope.calls()
        scaled = [c for c in calls if method_name(c) == "scale" and "scaler" in (receiver(c) or "").lower()]
        if not scaled:
            continue
        scaler = receiver(scaled[0]) or "scaler"
        unscaled = False
        for call in calls:
            if method_name(call) == "unscale_":
                unscaled = True
            elif callee(call) in ("clip_grad_norm_", "clip_grad_value_") and not unscaled:
                yield Hit(call, dotted(call.func) or "clip_grad_norm_",
                          RULES[CODE].message.format(call=callee(call), scaler=scaler))
