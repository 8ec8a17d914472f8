"""What every analysis produces: a ``Finding`` of a registered ``Rule``, at a ``Location``, with a ``Severity``.

The rule registry (``RULES``) lives here with the types; its entries are in ``ssdaudit.core.rules``. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import PurePath
from typing import Any
from collections.abc import Iterable


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Rule:
    """Everything about one rule, in one place: the docs pages, ``ssdaudit rules``, SARIF rule metadata and the
    README table are generated from these entries, and detectors make their findings through ``finding()``."""

    code: str
    name: str
    severity: Severity  # the default severity of its findings (SARIF's defaultConfiguration)
    summary: str
    why: str
    fix: str
    bad_example: str
    good_example: str
    found_by: tuple[str, ...]  # the commands that report it: "lint" (static), "params", "gradflow", "diff", "watch" (runtime)
    # The one-line message, with {fields} the detector fills ("" where the detectors phrase each case themselves).
    message: str = ""
    # Families a rule belongs to, which other code asks about instead of listing codes: "container" (a member in a
    # plain container: R001-R003), "hides-parameters" (its parameters are missing from parameters(): R001-R003, R005).
    # How ``params`` merges a static finding into runtime evidence (``registration.source_lint``): "walk-checked"
    # and "probe-checked" (the runtime checks it on the live model, always / when the probe ran: a static finding
    # nothing at runtime backs is dropped), "names-cause" (a static finding that names the cause of a runtime
    # finding of another code takes its place), "consequence" (reports what a bug does, never where: no static
    # evidence merges into it).
    tags: tuple[str, ...] = ()
    # What ``ssdaudit lint --fix`` does for it and when that is safe ("" where the rule has no automatic fix; the
    # fix itself is in the rule's module, ssdaudit/lint/rules/<code>_<name>.py).
    autofix: str = ""
    # The rules whose findings a finding of this rule can explain: seen in the same run at its step or later, they
    # are its consequences (``caused_by``), folded under it in reports (``ssdaudit.core.diagnosis``). Only pairs
    # with a known mechanism belong here (T006 BatchNorm in eval mode -> G005 exploding, G006 NaN gradients);
    # the default, none, makes every finding of the rule a root of its own.
    causes: tuple[str, ...] = ()

    @property
    def static(self) -> bool:
        """Found in source, without running anything (``ssdaudit lint``)."""
        return "lint" in self.found_by

    @property
    def runtime(self) -> bool:
        """Found by running the model or the training loop."""
        return any(c != "lint" for c in self.found_by)

    @property
    def docs(self) -> str:
        return f"docs/rules/{self.code}.md"

    def to_dict(self) -> dict[str, Any]:
        """The rule as ``ssdaudit rules --format json`` prints it."""
        return {"code": self.code, "name": self.name, "severity": self.severity.value, "summary": self.summary,
                "why": self.why, "fix": self.fix, "bad_example": self.bad_example, "good_example": self.good_example,
                "found_by": list(self.found_by), "docs": self.docs,
                **({"causes": list(self.causes)} if self.causes else {}),
                **({"autofix": self.autofix} if self.autofix else {})}

    def finding(self, path: str, message: str | None = None, *args: Any, severity: "Severity | None" = None,
                values: dict[str, Any] | None = None, **fields: Any) -> "Finding":
        """A finding of this rule at the attribute path ``path``, with the rule's severity unless a detector has a
        reason to say otherwise (a parameter-free module built in forward is only a note). ``message`` None: the
        rule's template, filled with ``path`` and ``values``."""
        if message is None:
            message = self.message.format(path=path, **(values or {}))
        return Finding(self.code, severity or self.severity, path, message, *args, **fields)


# The registry: rule code -> Rule. ``ssdaudit.core.rules`` fills it with the catalogue when ``ssdaudit.core`` is
# imported (importing any core module imports the package first), so a code is always found here.
RULES: dict[str, Rule] = {}


def rules_tagged(tag: str) -> frozenset[str]:
    """The codes of the registered rules in a family (see ``Rule.tags``)."""
    return frozenset(code for code, rule in RULES.items() if tag in rule.tags)


def register(*rules: Rule) -> None:
    """Add rules to the registry; a code registered twice is a programming error."""
    for rule in rules:
        if rule.code in RULES:
            raise ValueError(f"rule {rule.code} is registered twice")
        RULES[rule.code] = rule


@dataclass(frozen=True)
class Location:
    """A place in a source file: ``path``, 1-based ``line`` and ``col`` where known."""

    path: str
    line: int | None = None
    col: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Location":
        """"path:line[:col]" (or a bare path; a Windows drive letter stays in the path)."""
        parts = text.rsplit(":", 2)
        nums: list[int] = []
        while len(parts) > 1 and parts[-1].isdigit():
            nums.insert(0, int(parts.pop()))
        return cls(":".join(parts), nums[0] if nums else None, nums[1] if len(nums) > 1 else None)

    def __str__(self) -> str:
        return ":".join([self.path, *(str(n) for n in (self.line, self.col) if n is not None)])

    def with_path(self, path: str) -> "Location":
        return Location(path, self.line, self.col)


@dataclass(frozen=True)
class Edit:
    """Replace the text from (``line``, ``col``) up to (``end_line``, ``end_col``) with ``text``: 1-based lines and
    columns, the end exclusive (SARIF's region); an insertion has start == end."""

    line: int
    col: int
    end_line: int
    end_col: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "col": self.col, "end_line": self.end_line, "end_col": self.end_col, "text": self.text}


@dataclass(frozen=True)
class Fix:
    """An automatic fix of one finding: what it does (``title``), whether it keeps behaviour (``safe``: applied by
    ``lint --fix``; unsafe ones need ``--unsafe-fixes``), and the text edits, all in the finding's file."""

    title: str
    safe: bool
    edits: tuple[Edit, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "safe": self.safe, "edits": [e.to_dict() for e in self.edits]}


@dataclass(frozen=True)
class Finding:
    """One problem (or note) found in a model: where, what, how many parameters, and the fix. Frozen: a merge or
    a rewrite makes a new finding (``dataclasses.replace``).

    ``path`` is the attribute path in the model (``backbone``, ``<forward>`` for a pass-wide fact), or the
    checkpoint key or class symbol the rule is about; a finding about something else names it in ``subject``
    ("file" for a file that does not parse, "optimizer" for tensors only the optimizer holds) and leaves ``path``
    empty. ``location`` is where in the source (a ``Location``; a "file:line[:col]" string given here is parsed)."""

    rule: str
    severity: Severity
    path: str
    message: str
    params: int = 0
    modules: int = 0
    location: Location | None = None
    # The unregistered objects behind the finding, by the dotted name they would get once fixed.
    members: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    subject: str | None = None
    # Where the flagged code ends (1-based, the column exclusive), when the detector knows.
    end_line: int | None = None
    end_col: int | None = None
    # The automatic fix (``ssdaudit lint --fix``); ``fix`` is the rule's advice as text.
    autofix: Fix | None = field(default=None, compare=False)
    # Runtime findings (``watch``): the 1-based optimizer step at which it was first seen (None: a whole-run
    # judgement), and the code of the earlier finding that explains it (``ssdaudit.core.diagnosis.fold``).
    step: int | None = None
    caused_by: str | None = None
    # One finding per rule and place: the per-layer findings merged into this one (``diagnosis.merge_places``),
    # largest first; empty for a finding about one place.
    parts: tuple["Finding", ...] = field(default=(), compare=False, repr=False)
    # Numbers behind the message that code reads (never the message itself): G005 {"kind": "exploding", "ratio":
    # 1200.0, "row": the gradient-flow row step}, G006 {"row": ...}.
    facts: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def label(self) -> str:
        """What a report shows the finding about: its path, else its subject."""
        return self.path or self.subject or ""

    def __post_init__(self) -> None:
        if isinstance(self.location, str):  # detectors that know "file:line" as text
            object.__setattr__(self, "location", Location.parse(self.location) if self.location else None)

    @property
    def name(self) -> str:
        return RULES[self.rule].name

    @property
    def fix(self) -> str:
        return RULES[self.rule].fix

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "name": self.name,
            "severity": self.severity.value,
            "path": self.path,
            "params": self.params,
            "modules": self.modules,
            "message": self.message,
            "fix": self.fix,
            "location": str(self.location) if self.location is not None else None,
            "subject": self.subject,
            **({"end": f"{self.end_line}:{self.end_col}"} if self.end_line is not None else {}),
            **({"autofix": self.autofix.to_dict()} if self.autofix is not None else {}),
            **({"step": self.step} if self.step is not None else {}),
            **({"caused_by": self.caused_by} if self.caused_by is not None else {}),
            **({"parts": [{"path": p.path, "params": p.params, "message": p.message,
                           **({"step": p.step} if p.step is not None else {})} for p in self.parts]}
               if self.parts else {}),
        }


def fingerprint(f: Finding) -> str:
    """A finding's identity across edits: rule, file and symbol, not the line number (lines move). The path is
    taken as the finding holds it (``ssdaudit check`` makes it relative to the configuration's folder), so a
    baseline does not depend on the folder ssdaudit was started in."""
    path = PurePath(f.location.path).as_posix() if f.location is not None else ""
    return f"{f.rule}:{path}:{f.label}"


def rule_codes(codes: Iterable[str]) -> tuple[set[str], list[str]]:
    """Rule codes as a user writes them (any case, surrounding spaces) -> (the known codes, upper-case; the
    unknown ones as written). The one validation of codes, for ``--ignore`` and the configuration's ``ignore``."""
    known: set[str] = set()
    unknown: list[str] = []
    for raw in codes:
        code = raw.strip().upper()
        if not code:
            continue
        if code in RULES:
            known.add(code)
        else:
            unknown.append(raw.strip())
    return known, unknown
