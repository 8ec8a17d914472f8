"""The doctor's checks, one idea per module, discovered: every module of this package (but ``base``) that defines
``Check`` subclasses with a ``code``. Adding a check is its module (named after its code, e.g.
``t016_weights_not_loaded.py``) plus its test; its code must be a rule of the registry (``ssdaudit.core.rules``),
else importing this package raises ``ValueError``. ``CHECKS`` lists the classes ordered by code; ``all_checks()``
builds one of each for a ``Watch``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Sequence

from ssdaudit.core.findings import RULES
from ssdaudit.training.doctor.checks.base import Check

_NOT_CHECKS = frozenset({"base"})


def discover(path: Sequence[str] = tuple(__path__), package: str = __name__) -> list[type[Check]]:
    """The ``Check`` classes with a code defined in the modules of ``package`` (found in ``path``), ordered by code.
    Raises ``ValueError`` for a check whose code is no rule of the registry."""
    found: list[type[Check]] = []
    for info in pkgutil.iter_modules(list(path)):
        if info.name in _NOT_CHECKS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
                   if issubclass(c, Check) and c is not Check and c.__module__ == module.__name__ and c.code]
        for cls in classes:
            unknown = [c for c in (cls.code, *cls.also) if c not in RULES]
            if unknown:
                raise ValueError(f"doctor check {module.__name__}.{cls.__name__}: code {unknown[0]!r} is no rule of "
                                 "the registry (add its Rule entry in ssdaudit/core/rules/)")
        found += classes
    return sorted(found, key=lambda c: (c.code, c.__name__))


CHECKS: list[type[Check]] = discover()


def all_checks() -> list[Check]:
    """One instance of every discovered check, ordered by code."""
    return [cls() for cls in CHECKS]


__all__ = ["CHECKS", "Check", "all_checks", "discover"]
