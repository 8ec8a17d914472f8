"""R010: ``self.register_buffer`` / ``register_parameter`` / ``add_module`` / ``register_module`` inside forward(), or
``self.w = nn.Parameter(...)`` there (assigning a Parameter to an attribute registers it: late, like the calls)."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import RULES
from ssdaudit.lint.context import FileContext, Hit, calls_in, self_attr, walk
from ssdaudit.lint.scan import class_scans, registers

CODE = "R010"


def check(ctx: FileContext) -> Iterator[Hit]:
    for scan in class_scans(ctx):
        forward = scan.methods.get("forward")
        if forward is None:
            continue
        for call in calls_in(forward):
            if registers(call) and isinstance(call.func, cst.Attribute):
                yield Hit(call, f"{scan.cls.name.value}.forward", RULES[CODE].message.format(method=call.func.attr.value))
        for n in walk(forward):
            if isinstance(n, cst.Assign) and ctx.is_parameter_ctor(n.value):
                for t in n.targets:
                    attr = self_attr(t.target)
                    if attr is not None:
                        yield Hit(n.value, f"{scan.cls.name.value}.{attr}",
                                  f"self.{attr} = nn.Parameter(...) inside forward(): the parameter is registered only "
                                  "after a first call, so a fresh model cannot load it and an optimizer built before "
                                  "never trains it")
