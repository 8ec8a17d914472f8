"""R002: nn.Parameter objects in a plain list, tuple or dict (literals, comprehensions, ``.append``, subscript
stores, a local plain container assigned to ``self``). Fix: wrap the container where it is assigned
(nn.ParameterList / nn.ParameterDict)."""

from __future__ import annotations

from collections.abc import Iterator

from ssdaudit.core.findings import Fix
from ssdaudit.lint.context import FileContext, Hit
from ssdaudit.lint.fixes import container_hit_fix
from ssdaudit.lint.scan import CONTAINER_PATTERNS, ContainerHit, class_scans

CODE = "R002"


def message(h: ContainerHit) -> str:
    """The finding's message for one recorded fact (``scan.ContainerHit``) of a parameter in a plain container."""
    d, attr = h.detail, h.attr
    if h.pattern == "store":
        return f"parameter stored into the plain container self.{attr}: invisible to parameters()/state_dict()"
    if h.pattern == "literal":
        return (f"self.{attr} holds nn.Parameter objects in a plain {d['container']}: the optimizer and state_dict() "
                "will not see them")
    if h.pattern == "local":
        return (f"self.{attr} = {d['name']}, a plain {d['container']} that holds nn.Parameter objects: parameters(), "
                "state_dict() and .to() will not see them")
    return f"self.{attr}.{d['method']}(...) adds an nn.Parameter to a plain container: use nn.ParameterList"


def check(ctx: FileContext) -> Iterator[Hit]:
    for scan in class_scans(ctx):
        for h in scan.unregistered(CONTAINER_PATTERNS, "parameter"):
            yield Hit(h.node, h.symbol, message(h), data=(scan, h))


def fix(ctx: FileContext, hit: Hit) -> Fix | None:
    return container_hit_fix(ctx, hit)
