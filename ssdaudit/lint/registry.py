"""The lint rules' checks, by code: every module of ``ssdaudit.lint.rules`` named ``<code>_<name>.py``.

A module's code and name must be those of its registry entry in ``ssdaudit.core.rules`` (the entry owns the
message, why, fix and examples); ``CHECKS`` is ordered by code. Adding a rule is its registry entry plus its module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Protocol, cast

from ssdaudit.core.findings import RULES, Fix
from ssdaudit.lint import rules as _rules_package
from ssdaudit.lint.context import FileContext, Hit


class RuleModule(Protocol):
    """What a rule module provides (``fix`` is optional: ``fixer()`` returns it or None)."""

    CODE: str

    def check(self, ctx: FileContext) -> Iterator[Hit]: ...


FixFunction = Callable[[FileContext, Hit], "Fix | None"]


def _discover() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(_rules_package.__path__), key=lambda i: i.name):
        code, _, name = info.name.partition("_")
        module = importlib.import_module(f"{_rules_package.__name__}.{info.name}")
        if getattr(module, "CODE", None) != code.upper():
            raise ValueError(f"lint rule module {info.name}: CODE {getattr(module, 'CODE', None)!r} is not {code.upper()!r}")
        rule = RULES.get(code.upper())
        if rule is None or rule.name.replace("-", "_") != name:
            raise ValueError(f"lint rule module {info.name} has no registry entry {code.upper()} named {name.replace('_', '-')!r}")
        found[code.upper()] = module
    return found


CHECKS: dict[str, ModuleType] = _discover()


def check_of(code: str) -> RuleModule:
    return cast(RuleModule, CHECKS[code])


def fixer(code: str) -> FixFunction | None:
    """The rule's ``fix(ctx, hit)`` function, or None when it has none."""
    return cast("FixFunction | None", getattr(CHECKS[code], "fix", None))


def fixable() -> frozenset[str]:
    """The codes whose rule module offers a fix."""
    return frozenset(code for code, module in CHECKS.items() if hasattr(module, "fix"))
