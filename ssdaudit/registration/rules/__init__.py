"""The rules of ``ssdaudit params``, one module per rule code, discovered from this package.

A rule module is named ``<code>_<name>.py`` after its registry entry (``ssdaudit.core.rules``: the entry owns the
name, severity, why, fix and examples) and defines:

- ``CODE``: its rule code; ``ALSO``: the other codes the same detector reports, where one piece of evidence decides
  between several rules (the walk's verdict on one attribute path is R001, R002, R003, R006 or N006), default ();
- ``PHASE``: the evidence it judges: ``Phase.PROBE`` (the model index, the forward trace, the probe status, the
  dtype-move probe: judged for every probe of the plan, ``inspection.inspect_unregistered``) or ``Phase.AUDIT``
  (the round trip and the registered parameters: judged once per audit, ``params.audit_params``);
- ``ORDER``: where its findings stand in the report within its phase (ties by code);
- ``check(evidence, earlier) -> Iterator[Finding]``: its findings from the frozen evidence
  (``evidence.ParamsEvidence``) and the findings of the rules before it (a rule that names another's finding as
  the cause, or leaves alone what another reported, reads them; none is changed).

Adding a rule is its registry entry plus its module (and its test). Importing this package validates every module:
a module whose ``CODE`` is not its file's code, or that names a code which is no rule ``params`` reports
(``found_by``), raises ``ValueError``. ``_`` modules (``_members``) are shared helpers, not rules.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Sequence
from enum import Enum
from types import ModuleType
from typing import Protocol, cast

from ssdaudit.core.findings import RULES, Finding
from ssdaudit.registration.evidence import ParamsEvidence


class Phase(str, Enum):
    """When a rule judges: on each probe's evidence, or once per audit with the round trip."""

    PROBE = "probe"
    AUDIT = "audit"


class RuleModule(Protocol):
    """What a rule module provides (``ALSO`` is optional: ``codes_of`` reads it)."""

    CODE: str
    PHASE: Phase
    ORDER: int

    def check(self, evidence: ParamsEvidence, earlier: Sequence[Finding]) -> Iterator[Finding]: ...


def codes_of(module: ModuleType | RuleModule) -> tuple[str, ...]:
    """The codes a rule module reports: its ``CODE``, then its ``ALSO``."""
    return (module.CODE, *getattr(module, "ALSO", ()))


def discover(path: Sequence[str] = tuple(__path__), package: str = __name__) -> tuple[RuleModule, ...]:
    """The rule modules of ``package`` (found in ``path``), in report order (phase, ``ORDER``, code).

    Raises ``ValueError`` for a module whose ``CODE`` is not the code its name starts with, whose name is not its
    registry entry's, that names a code the registry lacks or whose rule ``params`` does not report, or that lacks
    ``PHASE``, ``ORDER`` or ``check``."""
    found: list[RuleModule] = []
    for info in pkgutil.iter_modules(list(path)):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        _validate(module, info.name)
        found.append(cast(RuleModule, module))
    phases = list(Phase)
    return tuple(sorted(found, key=lambda m: (phases.index(m.PHASE), m.ORDER, m.CODE)))


def _validate(module: ModuleType, name: str) -> None:
    code, _, rest = name.partition("_")
    where = f"params rule module {module.__name__}"
    if getattr(module, "CODE", None) != code.upper():
        raise ValueError(f"{where}: CODE {getattr(module, 'CODE', None)!r} is not {code.upper()!r} (its file's name)")
    rule = RULES.get(code.upper())
    if rule is not None and rule.name.replace("-", "_") != rest:
        raise ValueError(f"{where}: name it {code}_{rule.name.replace('-', '_')}.py after its registry entry")
    for c in codes_of(module):
        if c not in RULES or "params" not in RULES[c].found_by:
            raise ValueError(f"{where}: code {c!r} is no rule of the registry that params reports (add its Rule "
                             "entry in ssdaudit/core/rules/ with found_by 'params')")
    if not isinstance(getattr(module, "PHASE", None), Phase) or not isinstance(getattr(module, "ORDER", None), int) \
            or not callable(getattr(module, "check", None)):
        raise ValueError(f"{where}: define PHASE (a Phase), ORDER (an int) and check(evidence, earlier)")


RULE_MODULES: tuple[RuleModule, ...] = discover()


def judge(phase: Phase, evidence: ParamsEvidence, earlier: Sequence[Finding] = ()) -> list[Finding]:
    """The findings of every rule of ``phase`` on ``evidence``, in report order; each rule sees ``earlier`` and
    the findings of the rules before it."""
    findings: list[Finding] = []
    for module in RULE_MODULES:
        if module.PHASE is phase:
            findings.extend(module.check(evidence, (*earlier, *findings)))
    return findings


__all__ = ["Phase", "RULE_MODULES", "RuleModule", "codes_of", "discover", "judge"]
