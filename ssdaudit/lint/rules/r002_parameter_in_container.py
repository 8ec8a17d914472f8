"""R002: nn.Parameter objects in a plain list, tuple or dict (literals, comprehensions, ``.append``, subscript
stores). Fix: wrap the container where it is assigned (nn.ParameterList / nn.ParameterDict)."""

from __future__ import annotations

from collections.abc import Iterator

from ssdaudit.core.findings import Fix
from ssdaudit.lint.context import FileContext, Hit
from ssdaudit.lint.fixes import container_hit_fix, container_hits

CODE = "R002"


def check(ctx: FileContext) -> Iterator[Hit]:
    return container_hits(ctx, CODE)


def fix(ctx: FileContext, hit: Hit) -> Fix | None:
    return container_hit_fix(ctx, hit)
