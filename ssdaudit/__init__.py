"""ssdaudit: find the parameters a PyTorch model uses but never registers, and the other silent errors of training.

The public API. ``import ssdaudit`` imports neither torch nor any analysis, and patches nothing: each name is
loaded on first use.

Registration (does the model register what it uses): ``find_unregistered``, ``audit_params``, ``audit_target``,
``check_roundtrip``. Training: ``watch`` (the training doctor, its ``DoctorReport``), ``record_loads`` (record
``load_state_dict(strict=False)`` calls made before the watch, for T016), ``GradFlowMonitor``. Checkpoints: ``open_checkpoint``, ``load_object``,
``diff_checkpoints``, ``compare_keys``. Source: ``lint_paths``. The CI gate: ``run_check``. Findings and rules:
``Finding``, ``Location``, ``Rule``, ``RULES``, ``Severity``. Errors: ``UserError`` and its kinds ``UsageError``,
``LoadError``, ``TimeLimitExceeded``, ``ProbeError``, ``ConfigError``. Atomic writes: ``atomic_write``,
``atomic_write_text``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"  # the one version source: pyproject.toml reads it (tool.setuptools.dynamic)

# name -> the module that defines it
_EXPORTS = {
    "find_unregistered": "ssdaudit.registration.unregistered",
    "audit_params": "ssdaudit.registration.params",
    "ParamsReport": "ssdaudit.registration.params",
    "compare_keys": "ssdaudit.registration.params",
    "audit_target": "ssdaudit.registration.pipeline",
    "check_roundtrip": "ssdaudit.registration.roundtrip",
    "GradFlowMonitor": "ssdaudit.training.gradflow.monitor",
    "watch": "ssdaudit.training.doctor.watch",
    "record_loads": "ssdaudit.training.loads",
    "DoctorReport": "ssdaudit.training.doctor.report",
    "open_checkpoint": "ssdaudit.checkpoints.formats",
    "load_object": "ssdaudit.checkpoints.formats",
    "diff_checkpoints": "ssdaudit.checkpoints.diff",
    "lint_paths": "ssdaudit.lint.engine",
    "run_check": "ssdaudit.gate.check",
    "Finding": "ssdaudit.core.findings",
    "Location": "ssdaudit.core.findings",
    "Rule": "ssdaudit.core.findings",
    "RULES": "ssdaudit.core.findings",
    "Severity": "ssdaudit.core.findings",
    "Report": "ssdaudit.core.report",
    "UserError": "ssdaudit.core.errors",
    "UsageError": "ssdaudit.core.errors",
    "LoadError": "ssdaudit.core.errors",
    "TimeLimitExceeded": "ssdaudit.core.errors",
    "ProbeError": "ssdaudit.core.errors",
    "ConfigError": "ssdaudit.core.errors",
    "atomic_write": "ssdaudit.core.io",
    "atomic_write_text": "ssdaudit.core.io",
}

__all__ = [
    "find_unregistered", "audit_params", "ParamsReport", "compare_keys", "audit_target", "check_roundtrip",
    "GradFlowMonitor", "watch", "record_loads", "DoctorReport", "open_checkpoint", "load_object", "diff_checkpoints", "lint_paths", "run_check", "Finding",
    "Location", "Rule", "RULES", "Severity", "Report", "UserError", "UsageError", "LoadError", "TimeLimitExceeded",
    "ProbeError", "ConfigError", "atomic_write", "atomic_write_text", "__version__",
]

if TYPE_CHECKING:
    from ssdaudit.checkpoints.diff import diff_checkpoints
    from ssdaudit.checkpoints.formats import load_object, open_checkpoint
    from ssdaudit.core.errors import ConfigError, LoadError, ProbeError, TimeLimitExceeded, UsageError, UserError
    from ssdaudit.core.findings import RULES, Finding, Location, Rule, Severity
    from ssdaudit.core.io import atomic_write, atomic_write_text
    from ssdaudit.core.report import Report
    from ssdaudit.gate.check import run_check
    from ssdaudit.lint.engine import lint_paths
    from ssdaudit.registration.params import ParamsReport, audit_params, compare_keys
    from ssdaudit.registration.pipeline import audit_target
    from ssdaudit.registration.roundtrip import check_roundtrip
    from ssdaudit.registration.unregistered import find_unregistered
    from ssdaudit.training.doctor.report import DoctorReport
    from ssdaudit.training.doctor.watch import watch
    from ssdaudit.training.gradflow.monitor import GradFlowMonitor
    from ssdaudit.training.loads import record_loads


def __getattr__(name: str) -> object:
    # Lazy: `import ssdaudit` (and the CLI's start-up) must not import torch.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ssdaudit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
