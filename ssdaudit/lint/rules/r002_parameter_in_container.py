"""R002: nn.Parameter objects in a plain list, tuple or dict (literals, comprehensions, ``.append``, subscript
stores). Fix: wrap the container where it is assigned (nn.ParameterList / nn.ParameterDict)."""

from __future__ import annotations

from collections.abc import Iterator

from ssdaudit.core.findings import Fix
from ssdaudit.lint.context import FileContext, Hit
from ssdaudit.lint.fixes import container_fix
from ssdaudit.lint.scan import ClassScan, ContainerHit, class_scans

CODE = "R002"


def check(ctx: FileContext) -> Iterator[Hit]:
    for scan in class_scans(ctx):
        for h in scan.unregistered(CODE):
            yield Hit(h.node, h.symbol, h.message, data=(scan, h))


def fix(ctx: FileContext, hit: Hit) -> Fix | None:
    scan, h = hit.data
    assert isinstance(scan, ClassScan) and isinstance(h, ContainerHit)
    return container_fix(ctx, scan, h)
