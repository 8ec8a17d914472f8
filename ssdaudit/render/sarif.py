"""SARIF 2.1.0 (GitHub code scanning and other SARIF viewers) from any report's findings."""

from __future__ import annotations

import json
from pathlib import Path

from typing import Any

from ssdaudit.core.diagnosis import consequences_line, tree
from ssdaudit.core.findings import RULES, Finding, Fix, Severity, fingerprint

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
DOCS_BASE = "https://github.com/ssdaudit/ssdaudit/blob/main/"
_SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def render_sarif(findings: list[Finding], tool_version: str, default_file: str | None = None) -> str:
    """SARIF 2.1.0: one run, rule metadata (name, description, help text and docs link), one result per finding.

    Runtime findings (``watch``) carry their ``step`` and, for a consequence, ``caused_by`` (the code of its cause)
    in the result's ``properties``; a cause's message ends with its consequences, a consequence's begins with its
    cause (``ssdaudit.core.diagnosis``: the same grouping as the text and JSON reports)."""
    folded = {id(root): rest for root, rest in tree(findings) if rest}
    used = sorted({f.rule for f in findings})
    rules = []
    for code in used:
        r = RULES[code]
        rules.append({
            "id": code,
            "name": r.name,
            "shortDescription": {"text": r.summary},
            "fullDescription": {"text": r.why},
            "help": {"text": f"{r.why} Fix: {r.fix}", "markdown": f"{r.why}\n\n**Fix:** {r.fix}\n\n[Rule page]({DOCS_BASE}{r.docs})"},
            "helpUri": f"{DOCS_BASE}{r.docs}",
            "defaultConfiguration": {"level": _SARIF_LEVEL[r.severity]},
        })
    index = {code: i for i, code in enumerate(used)}
    results = []
    for f in findings:
        path = f.location.path if f.location is not None else default_file
        line = f.location.line if f.location is not None else None
        col = f.location.col if f.location is not None else None
        result: dict[str, Any] = {
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": f"{f'consequence of {f.caused_by}: ' if f.caused_by else ''}{f.label}: {f.message}. "
                                f"Fix: {f.fix}"
                                + (f" ({consequences_line(f, folded[id(f)])})" if id(f) in folded else "")},
            "partialFingerprints": {"ssdaudit/v1": fingerprint(f)},
        }
        props = {**({"step": f.step} if f.step is not None else {}),
                 **({"caused_by": f.caused_by} if f.caused_by is not None else {}),
                 **({"consequences": [c.rule for c in folded[id(f)]]} if id(f) in folded else {}),
                 **({"places": [p.path for p in f.parts]} if f.parts else {})}
        if props:
            result["properties"] = props
        if path:
            region: dict[str, int] = {"startLine": line or 1}
            if col:
                region["startColumn"] = col
            if f.end_line is not None and f.end_col is not None:
                region.update(endLine=f.end_line, endColumn=f.end_col)
            result["locations"] = [{"physicalLocation": {"artifactLocation": {"uri": artifact_uri(path)}, "region": region}}]
            if f.autofix is not None:
                result["fixes"] = [sarif_fix(f.autofix, artifact_uri(path))]
        results.append(result)
    doc = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "ssdaudit", "version": tool_version, "informationUri": DOCS_BASE + "README.md", "rules": rules}},
            "results": results,
        }],
    }
    return json.dumps(doc, indent=2)


def sarif_fix(fix: Fix, uri: str) -> dict[str, Any]:
    """A SARIF ``fix``: its description (the title, and whether ``lint --fix`` applies it) and the replacements."""
    return {
        "description": {"text": f"{fix.title} ({'safe: ssdaudit lint --fix' if fix.safe else 'unsafe: --fix --unsafe-fixes'})"},
        "artifactChanges": [{
            "artifactLocation": {"uri": uri},
            "replacements": [{
                "deletedRegion": {"startLine": e.line, "startColumn": e.col, "endLine": e.end_line, "endColumn": e.end_col},
                "insertedContent": {"text": e.text},
            } for e in fix.edits],
        }],
    }


def artifact_uri(path: str) -> str:
    """A finding's file as a URI: relative to the current folder when under it (what code scanning expects),
    else as given, with forward slashes."""
    p = Path(path)
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.as_posix()
