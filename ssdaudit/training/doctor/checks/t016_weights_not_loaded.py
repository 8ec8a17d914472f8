"""T016: ``load_state_dict(strict=False)`` that matched fewer than half of the module's keys."""

from __future__ import annotations

from typing import Any

from torch import nn

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context


def prefix_hint(missing: list[str], unexpected: list[str]) -> str:
    """", keys in the file start with 'module.'" when stripping one leading component of the unexpected keys (or
    adding one) turns them into missing ones."""
    missing_set = set(missing)
    for key in unexpected:
        if "." in key:
            head, rest = key.split(".", 1)
            if rest in missing_set:
                return f"; the file's keys start with '{head}.' (e.g. {key})"
    for key in missing:
        if "." in key:
            head, rest = key.split(".", 1)
            if rest in set(unexpected):
                return f"; the model's keys start with '{head}.' where the file's do not"
    return ""


class WeightsNotLoaded(Check):
    code = "T016"

    def on_load(self, ctx: Context, module: nn.Module, strict: bool, result: Any) -> None:
        if strict or result is None:
            return
        total = len(module.state_dict())
        missing = list(getattr(result, "missing_keys", []))
        unexpected = list(getattr(result, "unexpected_keys", []))
        matched = total - len(missing)
        if total and matched * 2 < total:
            name = ctx.name_of(module) if ctx.in_model(module) else type(module).__name__
            ctx.report(self.code, f"load_state_dict(strict=False) into {name} matched {matched} of {total} keys "
                       f"({len(missing)} missing, {len(unexpected)} unexpected){prefix_hint(missing, unexpected)}",
                       path=name)
