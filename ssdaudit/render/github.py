"""GitHub Actions workflow commands (``::error file=...,line=...::message``): annotations on a pull request's diff."""

from __future__ import annotations

from ssdaudit.core.diagnosis import consequences_line, tree
from ssdaudit.core.findings import Finding, Severity
from ssdaudit.render.sarif import artifact_uri

_GITHUB_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def _escape_github(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def render_github(findings: list[Finding], default_file: str | None = None) -> str:
    """GitHub Actions workflow commands: ``::error file=...,line=...,col=...,title=...::message``. One annotation
    per root finding: a consequence (``caused_by``, ``ssdaudit.core.diagnosis``) is named in its cause's message,
    not annotated on its own, so that the diff shows the cause."""
    lines = []
    for f, consequences in tree(findings):
        path = f.location.path if f.location is not None else default_file
        line = f.location.line if f.location is not None else None
        col = f.location.col if f.location is not None else None
        level = _GITHUB_LEVEL[f.severity]
        props = []
        if path:
            props.append(f"file={_escape_github(artifact_uri(path), True)}")
            if line:  # no line known (a runtime finding without a user frame): a file-level annotation
                props.append(f"line={line}")
                if col:
                    props.append(f"col={col}")
        props.append(f"title={_escape_github(f'{f.rule} {f.name}', True)}")
        folded = f"; {consequences_line(f, consequences)}" if consequences else ""
        lines.append(f"::{level} {','.join(props)}::{_escape_github(f'{f.label}: {f.message} (fix: {f.fix}){folded}')}")
    return "\n".join(lines)
