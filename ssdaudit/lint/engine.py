"""The static engine: parse each file with libcst, run every rule module of ``ssdaudit.lint.registry`` on it,
turn the hits into findings (with positions, end positions and fixes), drop suppressed ones, and apply fixes.

Nothing is imported or executed. The rules are in ``ssdaudit/lint/rules/`` (one module per rule, named after its
registry entry: R001 module-in-container ... L001 missing-zero-grad ...; ``ssdaudit rules`` lists them).

A finding is suppressed by ``# ssdaudit: ignore``, ``# ssdaudit: ignore[R001,...]`` or ``# noqa: R001`` on its
first or last line (a bare ``# noqa`` is another linter's: it does not silence ssdaudit).

Many files are linted in worker processes (``concurrent.futures``), one file per task: libcst is slower per
file than ``ast``, and the work is independent once the nn.Module class names of all files are known (a regular
expression pre-pass finds those, without parsing).
"""

from __future__ import annotations

import ast
import difflib
import os
import re
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libcst as cst

from ssdaudit.core.findings import RULES, Edit, Finding, Fix, Location, Severity
from ssdaudit.core.io import atomic_write_text
from ssdaudit.lint.context import FileContext, Hit, class_edges, module_classes
from ssdaudit.lint.registry import CHECKS, fixer

_IGNORE = re.compile(r"#\s*ssdaudit:\s*ignore(?:\[([A-Za-z0-9,\s]+)\])?", re.IGNORECASE)
_NOQA = re.compile(r"#\s*noqa:\s*([A-Za-z0-9,\s]+)", re.IGNORECASE)
PARALLEL_FROM = 50  # files: below this, worker start-up costs more than it saves
_FIX_ROUNDS = 5  # fixes that overlap wait for the next round; a round that changes nothing ends it


@dataclass
class LintResult:
    findings: list[Finding]
    files: int
    suppressed: int
    errors: list[str]  # files that could not be read (syntax errors are E999 findings)
    fixed: int = 0  # fixes applied (``--fix``) or that would be (``--diff``)
    diff: str = ""  # the unified diff of the fixes (``--diff``; also filled by ``--fix``)
    changed: list[str] = field(default_factory=list)  # files the fixes changed
    applied: list[str] = field(default_factory=list)  # "file:line: CODE title" of each fix applied (or shown)

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "suppressed": self.suppressed, "errors": self.errors, "fixed": self.fixed,
                "changed": self.changed, "applied": self.applied, "findings": [f.to_dict() for f in self.findings]}

    def exit_code(self, strict: bool = False) -> int:
        """1 on any finding above a note: a lint rule reports what source alone shows, so warnings fail too."""
        return 1 if any(f.severity is not Severity.INFO for f in self.findings) else 0


@dataclass
class _FileResult:
    findings: list[Finding]
    suppressed: int = 0
    error: str | None = None
    fixed: int = 0
    source: str = ""  # the original text, only when the fixes changed it (the diff needs both)
    new_source: str | None = None  # after the fixes, when they changed anything
    applied: list[str] = field(default_factory=list)  # "file:line: CODE title" of each fix applied


@dataclass(frozen=True)
class _Job:
    ignore: frozenset[str]
    fix: bool = False
    unsafe: bool = False


def iter_python_files(paths: Sequence[str | Path]) -> list[Path]:
    """Python files under ``paths`` (files taken as given), sorted; hidden and virtual-env folders skipped."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            for f in sorted(p.rglob("*.py")):
                parts = f.relative_to(p).parts
                if not any(part.startswith(".") or part in ("__pycache__", "node_modules", "site-packages", "venv")
                           for part in parts[:-1]):
                    out.append(f)
    return out


def _suppressed(lines: list[str], line: int, end_line: int, code: str) -> bool:
    for n in {line, end_line}:
        text = lines[n - 1] if 0 < n <= len(lines) else ""
        if "#" not in text:
            continue
        m = _IGNORE.search(text)
        if m and (m.group(1) is None or code in {c.strip().upper() for c in m.group(1).split(",")}):
            return True
        m = _NOQA.search(text)
        if m and code in {c.strip().upper() for c in re.split(r"[,\s]+", m.group(1))}:
            return True
    return False


def _applicable(source: str, known: AbstractSet[str], ignore: AbstractSet[str]) -> list[str]:
    """The rules that can fire on ``source``, from its text alone: a rule module's ``TRIGGERS`` (substrings, one of
    which its code needs), else an nn.Module class in the file. A file no rule applies to is not parsed by libcst."""
    module_class: bool | None = None
    out: list[str] = []
    for code, module in CHECKS.items():
        if code in ignore:
            continue
        triggers: tuple[str, ...] | None = getattr(module, "TRIGGERS", None)
        if triggers is not None:
            if any(t in source for t in triggers):
                out.append(code)
            continue
        if module_class is None:
            bases = known | {"Module"}
            module_class = any(b & bases for b in class_edges(source).values())
        if module_class:
            out.append(code)
    return out


def _findings(ctx: FileContext, codes: list[str]) -> tuple[list[Finding], int]:
    """The rule modules ``codes`` on one file: (findings, how many were suppressed)."""
    out: list[Finding] = []
    suppressed = 0
    for code in codes:
        module = CHECKS[code]
        for hit in module.check(ctx):
            out_f = _finding(ctx, code, hit)
            if out_f is None:
                suppressed += 1
            else:
                out.append(out_f)
    return out, suppressed


def _finding(ctx: FileContext, code: str, hit: Hit) -> Finding | None:
    r = ctx.range(hit.node)
    if _suppressed(ctx.lines, r.start.line, r.end.line, code):
        return None
    fix_fn = fixer(code)
    autofix: Fix | None = fix_fn(ctx, hit) if fix_fn is not None else None
    return RULES[code].finding(hit.symbol, hit.message, location=Location(str(ctx.path), r.start.line, r.start.column + 1),
                               severity=hit.severity, end_line=r.end.line, end_col=r.end.column + 1, autofix=autofix)


def _syntax_error(path: Path, source: str, exc: Exception) -> Finding | str:
    """E999 from Python's own parser (its message and position); a file Python reads but libcst does not is an
    error of the run, not of the file."""
    try:
        ast.parse(source, filename=str(path))
    except SyntaxError as err:
        return RULES["E999"].finding("", values={"error": err.msg}, location=f"{path}:{err.lineno or 1}:{err.offset or 1}",
                                     subject="file")
    return f"{path}: the linter's parser cannot read it: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"


def apply_edits(source: str, fixes: Sequence[Fix], done: list[Fix] | None = None) -> tuple[str, int]:
    """``source`` with the fixes' edits applied: (new text, fixes applied). A fix whose edits overlap one already
    taken is left for the next round; identical fixes (two findings on one container) count once. ``done``, when
    given, receives the fixes applied."""
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    def offset(line: int, col: int) -> int:
        return starts[min(line - 1, len(starts) - 1)] + col - 1

    taken: list[tuple[int, int, str]] = []
    seen: set[tuple[Edit, ...]] = set()
    applied = 0
    for fix in fixes:
        if fix.edits in seen:
            continue
        spans = [(offset(e.line, e.col), offset(e.end_line, e.end_col), e.text) for e in fix.edits]
        if any(_overlap(a, b) for a in spans for b in taken):
            continue
        seen.add(fix.edits)
        taken += spans
        applied += 1
        if done is not None:
            done.append(fix)
    for start, end, text in sorted(taken, key=lambda s: (s[0], s[1]), reverse=True):
        source = source[:start] + text + source[end:]
    return source, applied


def _overlap(a: tuple[int, int, str], b: tuple[int, int, str]) -> bool:
    (s1, e1, _), (s2, e2, _) = a, b
    if s1 == e1 and s2 == e2:
        return s1 == s2  # two insertions at one point: their order would be a guess
    if s1 == e1:
        return s2 < s1 < e2
    if s2 == e2:
        return s1 < s2 < e1
    return s1 < e2 and s2 < e1


_CLASSES: frozenset[str] = frozenset()


def _init_worker(classes: frozenset[str]) -> None:
    global _CLASSES
    _CLASSES = classes


def _lint_file(path: Path, job: _Job, classes: AbstractSet[str] | None = None) -> _FileResult:
    """Lint one file (and fix it, when ``job.fix``): the unit of work of a worker process."""
    known = set(_CLASSES if classes is None else classes)
    try:
        source = path.read_text(encoding="utf-8", errors="replace")
    except (OSError, ValueError) as exc:
        return _FileResult([], error=f"{path}: cannot read: {exc}")
    original = source
    fixed = 0
    titles: list[str] = []
    codes = _applicable(source, known, job.ignore)
    if not codes:  # nothing to look for: only whether it parses (Python's parser, ten times faster)
        try:
            ast.parse(source, filename=str(path))
        except SyntaxError as exc:
            err = _syntax_error(path, source, exc)
            return _FileResult([err] if isinstance(err, Finding) and "E999" not in job.ignore else [])
        except (ValueError, RecursionError) as exc:
            return _FileResult([], error=f"{path}: cannot parse: {exc}")
        return _FileResult([])
    for _ in range(_FIX_ROUNDS if job.fix else 1):
        try:
            module = cst.parse_module(source)
        except (cst.ParserSyntaxError, RecursionError, ValueError) as exc:
            err = _syntax_error(path, source, exc)
            if isinstance(err, str):
                return _FileResult([], error=err)
            return _FileResult([err] if "E999" not in job.ignore else [])
        ctx = FileContext(path, source, module, known)
        findings, suppressed = _findings(ctx, codes)
        if not job.fix:
            break
        fixable = [f for f in findings if f.autofix is not None and (f.autofix.safe or job.unsafe)]
        done: list[Fix] = []
        new, applied = apply_edits(source, [f.autofix for f in fixable if f.autofix is not None], done)
        if not applied or new == source:
            break
        source, fixed = new, fixed + applied
        titles += [f"{f.location or path}: {f.rule} {f.autofix.title}" for f in sorted(fixable, key=_sort_key)
                   if f.autofix is not None and any(f.autofix is d for d in done)]
    if source == original:  # nothing changed: no text goes back to the parent process
        return _FileResult(findings, suppressed, None, fixed)
    return _FileResult(findings, suppressed, None, fixed, original, source, titles)


def _excluded(path: Path, skipped: list[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved == e or e in resolved.parents for e in skipped)


def lint_paths(paths: Sequence[str | Path], ignore: AbstractSet[str] = frozenset(),
               exclude: Sequence[str | Path] = (), *, fix: bool = False, unsafe_fixes: bool = False,
               write: bool = True, jobs: int | None = None) -> LintResult:
    """Lint every Python file under ``paths``; ``ignore`` drops rule codes; files under ``exclude`` are read (their
    classes count as module bases) but not reported. Nothing is imported or run.

    ``fix``: apply the safe fixes (and the unsafe ones with ``unsafe_fixes``), rewriting each changed file
    atomically when ``write`` (else only ``LintResult.diff`` shows them); the findings are then those left after
    the fixes. ``jobs``: worker processes (default: the CPUs, when there are more than ``PARALLEL_FROM`` files).

    A file that does not parse is an E999 finding, one that cannot be read is listed in ``errors``: nothing
    raises for a file's content. Raises ``OSError`` only when a fixed file cannot be written."""
    files = iter_python_files(paths)
    edges: dict[str, set[str]] = {}
    for f in files:
        try:
            for name, bases in class_edges(f.read_text(encoding="utf-8", errors="replace")).items():
                edges.setdefault(name, set()).update(bases)
        except OSError:
            pass  # reported when the file itself is linted
    classes = frozenset(module_classes(edges))
    skipped = [Path(e).resolve() for e in exclude]
    todo = [f for f in files if not _excluded(f, skipped)]
    job = _Job(frozenset(ignore), fix, unsafe_fixes)
    workers = jobs if jobs is not None else (os.cpu_count() or 1) if len(todo) > PARALLEL_FROM else 1
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(classes,)) as pool:
            results = list(pool.map(_lint_file, todo, [job] * len(todo), chunksize=max(1, len(todo) // (workers * 8))))
    else:
        results = [_lint_file(f, job, classes) for f in todo]
    findings: list[Finding] = []
    errors: list[str] = []
    diffs: list[str] = []
    changed: list[str] = []
    suppressed = fixed = 0
    applied: list[str] = []
    for path, r in zip(todo, results):
        findings += [x for x in r.findings if x.rule not in ignore]
        suppressed += r.suppressed
        fixed += r.fixed
        if r.error:
            errors.append(r.error)
        if r.new_source is not None:
            changed.append(str(path))
            applied += r.applied
            diffs.append("".join(difflib.unified_diff(r.source.splitlines(keepends=True),
                                                      r.new_source.splitlines(keepends=True),
                                                      f"a/{path.as_posix().lstrip('/')}", f"b/{path.as_posix().lstrip('/')}")))
            if write:
                atomic_write_text(path, r.new_source)
    findings.sort(key=_sort_key)
    return LintResult(findings, len(files), suppressed, errors, fixed, "".join(diffs), changed, applied)


def _sort_key(f: Finding) -> tuple[str, int, int, str]:
    """File, then line and column as numbers (``m.py:5`` before ``m.py:10``), then rule."""
    loc = f.location
    return (loc.path, loc.line or 0, loc.col or 0, f.rule) if loc is not None else ("", 0, 0, f.rule)


def lint_files(paths: Sequence[str | Path], known_modules: AbstractSet[str] = frozenset(),
               only: AbstractSet[str] | None = None) -> list[Finding]:
    """The findings of the rules ``only`` (every rule when None) on these files, in this process, suppressions
    respected, no fixes. ``known_modules``: class names known to be ``nn.Module`` subclasses besides those the
    files themselves derive from ``Module`` (a caller that imported the classes knows their bases). Nothing is
    imported or run; a file that cannot be read or parsed gives no findings."""
    files = [Path(p) for p in paths]
    edges: dict[str, set[str]] = {name: {"Module"} for name in known_modules}
    for f in files:
        try:
            for name, bases in class_edges(f.read_text(encoding="utf-8", errors="replace")).items():
                edges.setdefault(name, set()).update(bases)
        except OSError:
            continue
    classes = frozenset(module_classes(edges))
    ignore = frozenset(code for code in CHECKS if only is not None and code not in only)
    job = _Job(ignore)
    out: list[Finding] = []
    for f in files:
        out += [x for x in _lint_file(f, job, classes).findings if x.rule not in ignore and x.rule != "E999"]
    out.sort(key=_sort_key)
    return out
