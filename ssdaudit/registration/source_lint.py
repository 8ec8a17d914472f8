"""Static evidence for ``ssdaudit params``: the linter on the source of the classes that make up the model.

Some registration bugs never show on the machine that runs the audit: ``nn.Parameter(torch.empty(n)).to(device)``
is a registered parameter on a CPU and a plain tensor on a GPU (R009). ``source_findings`` lints the model's own
classes (those of its modules and their bases whose source is user code: never torch's, ssdaudit's or an installed
package's), maps each static finding from ``Class.attr`` to the attribute paths of the instances in the model, and
merges it with the runtime findings: one finding per attribute path carrying both evidences.

Cost: nothing is imported or parsed by the linter unless a class's source has a pattern only the linter can judge
(a freshly wrapped ``nn.Parameter(...)`` used in an expression), the runtime found a registration problem to back
with source evidence, or the forward probe did not run. Then only the files of those classes are linted.
"""

from __future__ import annotations

import ast
import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ssdaudit.core.findings import Finding, Location, Severity, rules_tagged
from ssdaudit.core.frames import is_library

_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass
class UserClass:
    """A class of the model whose source is user code: its file, its line range, and the module paths of the
    model where an instance of it (or of a subclass) lives ("" for the model itself)."""

    cls: type
    file: Path
    start: int  # first line (1-based), decorators included
    end: int  # last line
    node: ast.ClassDef
    paths: list[str] = field(default_factory=list)


def _user_file(cls: type) -> Path | None:
    """The source file of ``cls`` when it is user code, else None (library code, ``ssdaudit.core.frames``: torch,
    ssdaudit, the standard library, anything installed in site-packages; classes without a source file)."""
    module = sys.modules.get(cls.__module__)
    name = getattr(module, "__file__", None)
    if not name or not name.endswith(".py"):
        return None
    return None if is_library(name) else Path(name).resolve()


def user_classes(model: Any) -> list[UserClass]:
    """The user classes of the model's modules (and their user base classes), each with its instances' paths.
    Each file is read and parsed (``ast``) once."""
    from torch import nn

    trees: dict[Path, dict[str, list[ast.ClassDef]]] = {}
    found: dict[type, UserClass | None] = {}
    for name, module in model.named_modules():
        for cls in type(module).__mro__:
            if cls is nn.Module or cls is object:
                break
            if cls not in found:
                found[cls] = _describe(cls, trees)
            entry = found[cls]
            if entry is not None and name not in entry.paths:
                entry.paths.append(name)
    return [c for c in found.values() if c is not None]


def _class_nodes(path: Path) -> dict[str, list[ast.ClassDef]]:
    """Every class definition of the file by qualified name (``Outer.Inner``; a class inside a function is filed
    under its own name too)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"), str(path))
    except (OSError, SyntaxError, ValueError):
        return {}
    out: dict[str, list[ast.ClassDef]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                qualname = f"{prefix}{child.name}"
                out.setdefault(qualname, []).append(child)
                if prefix:
                    out.setdefault(child.name, []).append(child)
                visit(child, qualname + ".")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, f"{prefix}{child.name}.<locals>.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


def _describe(cls: type, trees: dict[Path, dict[str, list[ast.ClassDef]]]) -> UserClass | None:
    path = _user_file(cls)
    if path is None:
        return None
    if path not in trees:
        trees[path] = _class_nodes(path)
    nodes = trees[path].get(cls.__qualname__) or trees[path].get(cls.__name__)
    if not nodes:
        return None
    node = nodes[0]
    start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return UserClass(cls, path, start, node.end_lineno or node.lineno, node)


def _wraps_then_uses(node: ast.AST) -> bool:
    """A freshly built ``Parameter(...)`` used in an expression (``.to(device)``, ``.t()``, ``* 2``, ``[0]``): what
    only the linter can judge (R009). Read with ``ast``: no libcst import for a class without it."""
    if not any(isinstance(n, (ast.Name, ast.Attribute)) and (n.id if isinstance(n, ast.Name) else n.attr).endswith("Parameter")
               for n in ast.walk(node)):
        return False
    parents = {child: parent for parent in ast.walk(node) for child in ast.iter_child_nodes(parent)}
    for call in ast.walk(node):
        if not isinstance(call, ast.Call):
            continue
        func = call.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name.endswith("Parameter") and isinstance(parents.get(call), (ast.Attribute, ast.BinOp, ast.Subscript,
                                                                         ast.UnaryOp)):
            return True
    return False


def _relative(location: Location) -> Location:
    from ssdaudit.registration.tracer import relative_path as relative_name

    return location.with_path(relative_name(location.path))


def _same_place(a: Location | None, b: Location | None) -> bool:
    if a is None or b is None or a.line != b.line:
        return False
    try:
        return Path(a.path).resolve() == Path(b.path).resolve()
    except OSError:
        return False


def _instance_paths(entry: UserClass, attr: str) -> list[str]:
    """Where ``Class.attr`` lives in the model; for a method (forward), the instances themselves."""
    if not attr or inspect.isfunction(getattr(entry.cls, attr, None)):
        return [p or "<forward>" for p in entry.paths]
    return [f"{p}.{attr}" if p else attr for p in entry.paths]


def merged_findings(model: Any, runtime: Sequence[Finding], probe_ran: bool) -> list[Finding]:
    """The runtime findings merged with the linter's registration findings on the model's own classes: a pure
    function, returning new findings (the runtime ones are not changed).

    Each static finding (symbol ``Class.attr``) becomes one finding per attribute path, merged into a runtime
    finding at that path (or of the same rule at the same file:line): the runtime finding's message then ends with
    "; also found in source at FILE:LINE" (and the static rule's message when the rules differ), and takes the
    stricter severity of the two. The policy is the rules' (``Rule.tags``): a static finding of a rule the runtime
    checks on the live model ("walk-checked" always, "probe-checked" when ``probe_ran``) that matches no runtime
    finding is dropped (the live objects showed nothing wrong); one that "names-cause" replaces the runtime finding
    of another code at its path (R009 is why the runtime sees a plain tensor, R004); none merges into a
    "consequence" (R007). The static findings left (R009, and the probe's rules when the probe did not run) are
    appended, with the instance paths and locations relative to the working directory. Suppressions
    (``# ssdaudit: ignore[...]``, ``# noqa: R009``) hold.
    """
    merged = list(runtime)
    classes = user_classes(model)
    if not classes:
        return merged
    flagged = any(f.rule.startswith("R") and f.severity is not Severity.INFO for f in runtime)
    if probe_ran and not flagged and not any(_wraps_then_uses(c.node) for c in classes):
        return merged  # nothing the linter could add: its libcst parse is not paid for
    from ssdaudit.lint.engine import lint_files

    registration = {code for code in _rule_codes() if code.startswith("R")}
    files = sorted({c.file for c in classes})
    static = lint_files(files, {c.cls.__name__ for c in classes}, registration)
    added: list[Finding] = []
    for sf in static:
        entry = _owner(sf, classes)
        if entry is None or sf.location is None:
            continue
        attr = sf.path.partition(".")[2]
        method = not attr or inspect.isfunction(getattr(entry.cls, attr, None))
        paths = _instance_paths(entry, attr)
        location = _relative(sf.location)
        targets = _targets(merged, sf, paths, method)
        if targets:
            for i in targets:
                merged[i] = _merge_one(merged[i], sf, location)
            continue
        checked = rules_tagged("walk-checked") | (rules_tagged("probe-checked") if probe_ran else frozenset())
        if any(rf.path in paths for rf in merged) and not method or sf.rule in checked:
            continue
        more = f" (also in {', '.join(f'`{p}`' for p in paths[1:4])}{', ...' if len(paths) > 4 else ''})" if len(paths) > 1 else ""
        added.append(replace(sf, path=paths[0], message=f"{sf.message} [found in the source of `{entry.cls.__name__}`]{more}",
                             location=location, autofix=None))
    return merged + added


def _targets(runtime: list[Finding], sf: Finding, paths: list[str], method: bool) -> list[int]:
    """The runtime findings (indices) a static finding merges into: the same rule at the attribute path (or at the
    same file:line: a module built in forward); else another rule's warning or error at that path (R004 for a moved
    Parameter, the R009 of a GPU run), never a "consequence" (the round trip's R007)."""
    at_path = {i for i, rf in enumerate(runtime) if rf.path in paths and not method}
    same = [i for i, rf in enumerate(runtime)
            if rf.rule == sf.rule and (i in at_path or _same_place(rf.location, sf.location))]
    if same:
        return same
    consequences = rules_tagged("consequence")
    return [i for i in sorted(at_path) if runtime[i].severity is not Severity.INFO and runtime[i].rule not in consequences]


def _merge_one(rf: Finding, sf: Finding, location: Location) -> Finding:
    """A new finding: the runtime finding ``rf`` with the static evidence ``sf`` (found at ``location``)."""
    if rf.rule != sf.rule and sf.rule in rules_tagged("names-cause"):
        # the source names the cause (a Parameter moved after wrapping), the runtime only its effect (a plain
        # tensor attribute): the cause is the finding, so its fix (not register_buffer) is shown
        rule = sf.rule
        message = f"{sf.message} (at runtime: {rf.message}); found in source at {location.path}:{location.line}"
    else:
        rule = rf.rule
        also = "" if rf.rule == sf.rule else f" ({sf.rule}: {sf.message})"
        message = f"{rf.message}; also found in source at {location.path}:{location.line}{also}"
    severity = sf.severity if _RANK[sf.severity] < _RANK[rf.severity] else rf.severity  # the stricter decides
    return replace(rf, rule=rule, message=message, severity=severity,
                   location=rf.location if rf.location is not None else location)


def _rule_codes() -> list[str]:
    from ssdaudit.lint.registry import CHECKS

    return list(CHECKS)


def _owner(finding: Finding, classes: list[UserClass]) -> UserClass | None:
    """The user class whose source holds the static finding (its file and line range, and its name first in the
    finding's ``Class.attr`` symbol)."""
    loc = finding.location
    if loc is None or loc.line is None:
        return None
    name = finding.path.partition(".")[0]
    for c in classes:
        if c.cls.__name__ == name and c.start <= loc.line <= c.end and _same_file(c.file, loc.path):
            return c
    return None


def _same_file(path: Path, other: str) -> bool:
    try:
        return path == Path(other).resolve()
    except OSError:
        return False
