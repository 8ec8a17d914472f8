"""R001: nn.Module objects in a plain list, tuple, dict (literals, comprehensions, ``.append``, subscript stores,
a local plain container assigned to ``self``, an unpacked registry). Fix: wrap the container where it is assigned
(nn.ModuleList / nn.ModuleDict)."""

from __future__ import annotations

from collections.abc import Iterator

from ssdaudit.core.findings import Fix
from ssdaudit.lint.context import FileContext, Hit
from ssdaudit.lint.fixes import container_hit_fix
from ssdaudit.lint.scan import CONTAINER_PATTERNS, ContainerHit, class_scans

CODE = "R001"
_UNSEEN = "parameters(), state_dict() and .to() will not see them"


def message(h: ContainerHit) -> str:
    """The finding's message for one recorded fact (``scan.ContainerHit``) of a module in a plain container."""
    d, attr = h.detail, h.attr
    if h.pattern == "store":
        return f"module stored into the plain container self.{attr}: invisible to parameters()/state_dict()"
    if h.pattern == "literal":
        return f"self.{attr} holds nn.Module objects in a plain {d['container']}: {_UNSEEN}"
    if h.pattern == "local":
        return f"self.{attr} = {d['name']}, a plain {d['container']} that holds nn.Module objects: {_UNSEEN}"
    if h.pattern == "add":
        return f"self.{attr}.{d['method']}(...) adds an nn.Module to a plain container: use nn.ModuleList"
    return (f"self.{attr} holds the modules of self.{d['source']} in a plain list after `del self.{d['source']}`: "
            "they leave parameters(), state_dict() and .to()")


def check(ctx: FileContext) -> Iterator[Hit]:
    for scan in class_scans(ctx):
        for h in scan.unregistered(CONTAINER_PATTERNS, "module"):
            yield Hit(h.node, h.symbol, message(h), data=(scan, h))


def fix(ctx: FileContext, hit: Hit) -> Fix | None:
    return container_hit_fix(ctx, hit)
