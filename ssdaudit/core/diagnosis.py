"""A diagnosis a person can read: causes first, each with its consequences folded under it; one finding per rule and
place, not per layer. No torch.

A finding is a *consequence* when an earlier finding in the same run explains it: its rule is in the other rule's
``Rule.causes`` and it was seen at that finding's step or later (a whole-run judgement, step None, comes after
every step). ``fold`` marks each consequence with ``caused_by`` (the code of the finding that explains it);
``tree`` groups findings under their root causes; the text, JSON, SARIF and GitHub renderers all read these two,
so they agree on what is a cause and what is a consequence. Exit codes are not touched: a consequence is still a
finding of its own severity.
"""

from __future__ import annotations

import math
from dataclasses import replace
from collections.abc import Iterable

from ssdaudit.core.findings import RULES, Finding, Severity

SHOWN = 3  # places named in a merged finding's message before "and N more"


def when(f: Finding) -> float:
    """When a finding was seen, for ordering: its step, or infinity for a whole-run judgement (step None)."""
    return float(f.step) if f.step is not None else math.inf


def merge_places(findings: Iterable[Finding], shown: int = SHOWN) -> list[Finding]:
    """One finding per rule and place: findings of one rule, severity, location (file:line and step; the whole run for
    findings without a line) and kind (``facts["kind"]``) that differ only in the model path they name (per-layer
    G005, G002, G004 ...) become one finding, seen at the earliest of their steps, whose message
    names the first ``shown`` layers by size (parameters) and then a count; every original is kept in ``parts``,
    largest first. Findings about a subject (an optimizer, a param group) and single ones are returned as they
    are. The order is that of each group's first finding."""
    findings = list(findings)
    groups: dict[tuple[object, ...], list[Finding]] = {}
    keys: list[tuple[object, ...]] = []
    for k, f in enumerate(findings):
        # a finding with a source line is one place per step; the gradient-flow findings (no line) are one place
        # per run: the layers of an explosion that left their range at steps 4 and 5 are one finding, from step 4
        step = f.step if f.location is not None else None
        key: tuple[object, ...] = ((f.rule, f.severity, step, str(f.location) if f.location else None,
                                    f.facts.get("kind")) if f.path and not f.subject and not f.parts else ("one", k))
        if key not in groups:
            groups[key] = []
            keys.append(key)
        groups[key].append(f)
    out = []
    for key in keys:
        group = groups[key]
        out.append(group[0] if len(group) == 1 else _merged(group, shown))
    return out


def _merged(group: list[Finding], shown: int) -> Finding:
    parts = tuple(sorted(group, key=lambda f: -f.params))
    n, first = len(parts), parts[0]
    names = ", ".join(p.path for p in parts[:shown]) + (f" and {n - shown} more" if n > shown else "")
    facts = dict(first.facts)
    ratios = [p.facts["ratio"] for p in parts if isinstance(p.facts.get("ratio"), (int, float))]
    if ratios:
        facts["ratio"] = max(ratios, key=lambda r: abs(math.log(r)) if r > 0 else 0.0)
    message = f"{n} layers ({names}; largest first): {first.path}: {first.message}"
    steps = [p.step for p in parts if p.step is not None]
    return replace(first, path="", subject=f"{n} layers", message=message, params=sum(p.params for p in parts),
                   step=min(steps) if steps else None,
                   modules=sum(p.modules for p in parts), parts=parts, facts=facts, members={}, caused_by=None)


def fold(findings: Iterable[Finding]) -> list[Finding]:
    """The findings, each consequence marked with ``caused_by``: the code of the earliest finding seen at its step
    or before whose rule lists its rule in ``Rule.causes`` (recomputed from scratch: a ``caused_by`` already set is
    ignored). New findings, in the order given."""
    findings = list(findings)
    order = sorted(range(len(findings)), key=lambda i: (when(findings[i]), i))
    seen: list[Finding] = []
    out: dict[int, Finding] = {}
    for i in order:
        f = findings[i]
        cause = next((g for g in seen if f.rule in RULES[g.rule].causes and when(g) <= when(f)), None)
        out[i] = replace(f, caused_by=cause.rule if cause is not None else None)
        seen.append(out[i])
    return [out[i] for i in range(len(findings))]


def tree(findings: list[Finding]) -> list[tuple[Finding, list[Finding]]]:
    """Root findings (``caused_by`` None), earliest first, each with every finding it explains, directly or through
    another consequence, in the order they were seen (findings without a step keep the order given). A
    ``caused_by`` names a code: its finding is the earliest one of that code seen no later (the one ``fold``
    chose)."""
    order = sorted(range(len(findings)), key=lambda i: (when(findings[i]), i))

    def parent(i: int) -> int | None:
        f = findings[i]
        if f.caused_by is None:
            return None
        return next((j for j in sorted(range(len(findings)), key=lambda j: (when(findings[j]), j))
                     if j != i and findings[j].rule == f.caused_by and when(findings[j]) <= when(f)), None)

    def root(i: int) -> int:
        seen = {i}
        while (p := parent(i)) is not None and p not in seen:
            seen.add(p)
            i = p
        return i

    roots = [i for i in order if root(i) == i]
    under: dict[int, list[Finding]] = {r: [] for r in roots}
    for i in sorted(range(len(findings)), key=lambda i: (when(findings[i]), i)):
        r = root(i)
        if r != i:
            under[r].append(findings[i])
    return [(findings[r], under[r]) for r in roots]


def ordered(findings: list[Finding]) -> list[Finding]:
    """Cause first: each root, then its consequences (``tree`` flattened)."""
    return [f for root, rest in tree(findings) for f in (root, *rest)]


def where(f: Finding) -> str:
    """`T006 at main.py:348, step 2` (or `G006 (fc.weight), step 5` without a line): a finding's code, where and
    step, as a headline names it."""
    step = f", step {f.step}" if f.step is not None else ""
    if f.location is not None:
        return f"{f.rule} at {f.location}{step}"
    return f"{f.rule} ({f.label}){step}" if f.label else f"{f.rule} at step {f.step}" if f.step is not None else f.rule


def headline(findings: list[Finding]) -> str:
    """`2 causes found: T006 at main.py:348, step 2; T012 at main.py:300, step 1` (notes left out); "" when no
    warning or error was found."""
    roots = [r for r, _ in tree(findings) if r.severity is not Severity.INFO]
    if not roots:
        return ""
    return f"{len(roots)} cause{'s' if len(roots) != 1 else ''} found: " + "; ".join(where(r) for r in roots)


def brief(f: Finding) -> str:
    """A consequence in a few words: ``exploding gradient in 41 layers (up to 1.2e+03x) from step 3 (G005)``."""
    kind = f.facts.get("kind")
    what = f"{kind} gradient" if isinstance(kind, str) else RULES[f.rule].name
    place = f" in {len(f.parts)} layers" if f.parts else f" in {f.label}" if f.label else ""
    ratio = f.facts.get("ratio")
    size = f" (up to {ratio:.2g}x)" if isinstance(ratio, (int, float)) and kind == "exploding" else ""
    at = f" from step {f.step}" if f.step is not None and kind else f" at step {f.step}" if f.step is not None else ""
    return f"{what}{place}{size}{at} ({f.rule})"


def consequences_line(cause: Finding, consequences: list[Finding]) -> str:
    """`exploding gradient in 41 layers ... (G005), non-finite-gradient in fc.bias at step 5 (G006): consequences of
    T006`."""
    return f"{', '.join(brief(c) for c in consequences)}: consequence{'s' if len(consequences) != 1 else ''} of {cause.rule}"
