"""``ssdaudit check``: lint, then params (and gradflow where asked) on each configured model, against expectations.

``run_check(config)`` returns a ``CheckReport``: one row per step with its status, the findings that fail the gate,
and those a baseline already knows. Library code: nothing printed here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ssdaudit.gate.config import CheckConfig, ModelCheck
from ssdaudit.core.findings import Finding, Location, Severity, fingerprint
from ssdaudit.core.report import failing_findings

if TYPE_CHECKING:
    from ssdaudit.registration.params import ParamsReport

BASELINE_VERSION = 1


@dataclass
class CheckRow:
    name: str
    status: str  # ok | failed | expected failure | unexpected pass | error
    details: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)  # expectations that do not hold
    expect: str = "pass"
    broken_at: list[Location | None] = field(default_factory=list)  # where each broken expectation is configured

    target_file: str | None = None  # the configured model's file, where K001/K002 point

    @property
    def failing(self) -> bool:
        return self.status in ("failed", "unexpected pass", "error")

    def gate_findings(self) -> list[Finding]:
        """K001 for a model that could not be audited, K002 for each expectation it breaks (an expected failure
        that passed included); none for a lint row or a row whose failure its findings already explain."""
        from ssdaudit.core.findings import RULES

        where = Location(self.target_file) if self.target_file else None
        if self.status == "error":
            return [RULES["K001"].finding(self.name, "; ".join(self.details), location=where)]
        if self.status == "unexpected pass":
            reason = next((d for d in self.details if d.startswith("expected to fail")), 'expect = "fail"')
            return [RULES["K002"].finding(self.name, f"passed, but is configured to fail ({reason})", location=where)]
        if self.status == "failed":
            at = self.broken_at + [None] * (len(self.broken) - len(self.broken_at))
            return [RULES["K002"].finding(self.name, b, location=loc or where) for b, loc in zip(self.broken, at)]
        return []


@dataclass
class CheckReport:
    rows: list[CheckRow]
    new: list[Finding]  # error-level findings not in the baseline (these fail the gate)
    known: list[Finding]  # findings the baseline records
    all_findings: list[Finding]

    @property
    def ok(self) -> bool:
        return not any(r.failing for r in self.rows)

    @property
    def findings(self) -> list[Finding]:
        """What SARIF and GitHub annotations show: the findings that fail the gate (``all_findings`` has the rest),
        then one K001 per model that could not be audited and one K002 per broken expectation, so a gate that fails
        always says why on the pull request."""
        return self.new + [f for r in self.rows for f in r.gate_findings()]

    def exit_code(self, strict: bool = False) -> int:
        """0 everything holds, 1 a new error finding or a broken expectation, 2 a step that could not run."""
        if any(r.status == "error" for r in self.rows):
            return 2
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": [{"name": r.name, "status": r.status, "details": r.details, "findings": [f.to_dict() for f in r.findings]}
                     for r in self.rows],
            "new": [f.to_dict() for f in self.new], "known": [f.to_dict() for f in self.known],
        }


def read_baseline(path: str | Path) -> set[str]:
    from ssdaudit.core.errors import LoadError

    path = Path(path)
    if not path.exists():
        raise LoadError(f"no such baseline file: {path} (create it with --write-baseline)")
    try:
        data = json.loads(path.read_text())
        return set(data["fingerprints"])
    except (ValueError, KeyError, TypeError) as exc:
        raise LoadError(f"{path} is not an ssdaudit baseline (a JSON object with 'fingerprints')") from exc


def write_baseline(path: str | Path, findings: list[Finding]) -> int:
    from ssdaudit.core.io import atomic_write_text
    prints = sorted({fingerprint(f) for f in findings})
    atomic_write_text(path, json.dumps({"version": BASELINE_VERSION, "fingerprints": prints}, indent=1) + "\n")
    return len(prints)


def _require_probe(report: ParamsReport) -> None:
    """Raises ``ProbeError`` when forward failed in train and eval mode (``report.probe_status``): the checks that
    need it did not run, so the model is not known to be clean (K001), not a pass with a note."""
    from ssdaudit.core.errors import ProbeError

    status = report.probe_status
    if status is not None and status.attempted and not status.ran:
        raise ProbeError(f"the forward probe failed in train and eval mode: {status.failure}; "
                         "fix forward, or give input_shape (in [[tool.ssdaudit.models]]) that it accepts")


def check_model(m: ModelCheck, root: Path, progress: Callable[[str], None] | None = None,
                timeout: float | None = None) -> CheckRow:
    """Audit one configured model; a load or probe problem (a model file that exits or hangs too) becomes an
    "error" row, never a pass. ``timeout``: seconds for building and probing it."""
    from ssdaudit.core.errors import Deadline, UserError
    from ssdaudit.registration.pipeline import audit_target

    row = CheckRow(m.target, "ok", expect=m.expect, target_file=_target_file(m.target))
    deadline = Deadline(timeout or None)
    try:
        # the gate keeps its audit (walk, probe, device-move check); the round trip is `ssdaudit params`'s, and the
        # source is the gate's lint step's (linted here too, a static finding would be counted twice)
        report = audit_target(m.target, m.reference, input_shape=tuple(m.input_shape) if m.input_shape else None,
                              timeout=deadline.left() or 0, roundtrip=False, root=root, lint_source=False)
        _require_probe(report)
        ref_name = m.reference
        findings = [f for f in report.findings if f.severity is not Severity.INFO]
        broken: list[str] = []
        broken_at: list[Location | None] = []

        def breaks(message: str, key: str) -> None:
            """An expectation that does not hold, located at its key in the configuration file (K002 points there)."""
            broken.append(message)
            line = m.lines.get(key)
            broken_at.append(_relative_to(root, Location(m.source, line)) if m.source and line else None)

        if m.params is not None:
            allowed = m.tolerance * m.params
            if abs(report.registered_params - m.params) > allowed:
                breaks(f"registered parameters {report.registered_params:,}, expected {m.params:,}"
                       + (f" (tolerance {m.tolerance:g})" if m.tolerance else ""), "params")
        if report.reference is not None:
            allowed = m.tolerance * report.reference.params
            if abs(report.reference.difference) > allowed:
                breaks(f"{report.reference.difference:+,} parameters against {ref_name}", "reference")
        if m.max_checkpoint_mb is not None and report.checkpoint_bytes > m.max_checkpoint_mb * 1e6:
            breaks(f"checkpoint {report.checkpoint_bytes / 1e6:.1f} MB > max_checkpoint_mb {m.max_checkpoint_mb}",
                   "max_checkpoint_mb")
        row.details.append(f"{report.registered_params:,} registered parameters, checkpoint {report.checkpoint_bytes / 1e6:.1f} MB")
        if m.gradflow_steps:
            from ssdaudit.training.gradflow.pipeline import gradflow_target

            if progress:
                progress(f"gradflow probe: {m.target}")
            gradflow = gradflow_target(m.target, m.gradflow_steps, tuple(m.input_shape) if m.input_shape else None,
                                       timeout=deadline.left() or 0, root=root)
            gf = [f for f in gradflow.findings if f.severity is not Severity.INFO]
            findings += gf
            row.details.append(f"gradflow: {len(gradflow.run.steps)} steps, {len(gf)} findings")
        findings = [replace(f, location=_relative_to(root, f.location) if f.location else Location(row.target_file or m.target))
                    for f in findings]
        row.findings, row.broken, row.broken_at = findings, broken, broken_at
        row.details += broken
        if m.expect == "fail" and m.reason:
            row.details.append(f"expected to fail: {m.reason}")
    except (UserError, ValueError) as exc:
        row.status, row.details = "error", [str(exc)]
    return row


def _target_file(target: str) -> str | None:
    """The file a configured target names (``models/net.py:build`` -> ``models/net.py``); None for a module path,
    a library model or a target that does not parse (the K001 then has no location)."""
    from ssdaudit.core.errors import UserError
    from ssdaudit.core.targets import TargetSpec

    try:
        return TargetSpec.parse(target).file
    except (UserError, ValueError):
        return None


def _relative_to(root: Path, location: Location) -> Location:
    """A finding's location with the file relative to the configuration's folder where it lies below it, so
    fingerprints (and reports) do not depend on the folder ssdaudit was started in."""
    try:
        return location.with_path(Path(location.path).resolve().relative_to(root.resolve()).as_posix())
    except (ValueError, OSError):
        return location


def run_check(cfg: CheckConfig, baseline: set[str] | None = None, progress: Callable[[str], None] | None = None) -> CheckReport:
    """The CI gate: lint the configured paths, then audit each configured model (``audit_target``, and the gradflow
    probe where ``gradflow_steps``), against its expectations (parameter count, reference, checkpoint size,
    ``expect = "fail"``). ``baseline``: fingerprints of known findings (reported, not failing). ``progress(step)``
    names each step as it starts.

    Side effects: runs each model's code (under ``cfg.timeout``). A model that cannot be loaded or probed is an
    "error" row, never a pass; nothing raises for a model's failure (``load_config`` raises ``ConfigError``)."""
    from ssdaudit.lint.engine import lint_paths

    rows: list[CheckRow] = []
    every: list[Finding] = []
    if cfg.lint:
        if progress:
            progress("lint")
        result = lint_paths([cfg.root / p for p in cfg.lint], cfg.ignore, [cfg.root / p for p in cfg.exclude])
        # paths relative to the configuration's folder, as the user wrote them
        relative = [replace(f, location=_relative_to(cfg.root, f.location)) if f.location else f for f in result.findings]
        excluded = f", {len(cfg.exclude)} excluded" if cfg.exclude else ""
        row = CheckRow(f"lint {', '.join(cfg.lint)}", "ok", [f"{result.files} files{excluded}, {len(result.findings)} findings"])
        row.details += result.errors
        row.findings = relative
        rows.append(row)
    for m in cfg.models:
        if progress:
            progress(f"params: {m.target}")
        rows.append(check_model(m, cfg.root, progress, cfg.timeout))
    baseline = baseline or set()
    new, known = [], []
    for row in rows:
        row.findings = [f for f in row.findings if f.rule not in cfg.ignore]
        every += row.findings
        if row.status == "error":
            continue
        errors = failing_findings(row.findings)
        if row.expect == "fail":  # a demonstration of a bug: it must keep failing, and its findings are expected
            row.status = "expected failure" if errors or row.broken else "unexpected pass"
            continue
        row_new = [f for f in errors if fingerprint(f) not in baseline]
        known += [f for f in row.findings if fingerprint(f) in baseline]
        new += row_new
        row.status = "failed" if row_new or row.broken else "ok"
    return CheckReport(rows, new, known, every)
