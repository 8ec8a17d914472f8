"""R010: ``self.register_buffer`` / ``register_parameter`` / ``add_module`` / ``register_module`` inside forward()."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import RULES
from ssdaudit.lint.context import FileContext, Hit, calls_in
from ssdaudit.lint.scan import class_scans, registers

CODE = "R010"


def check(ctx: FileContext) -> Iterator[Hit]:
    for scan in class_scans(ctx):
        forward = scan.methods.get("forward")
        for call in calls_in(forward) if forward is not None else ():
            if registers(call) and isinstance(call.func, cst.Attribute):
                yield Hit(call, f"{scan.cls.name.value}.forward", RULES[CODE].message.format(method=call.func.attr.value))
