"""ssdaudit: find the parameters a PyTorch model uses but never registers."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["Finding", "Severity", "RULES", "find_unregistered", "audit_params", "ParamsReport", "__version__"]

if TYPE_CHECKING:
    from .findings import RULES, Finding, Severity
    from .params import ParamsReport, audit_params
    from .registration import find_unregistered


def __getattr__(name: str) -> object:
    # Lazy: `import ssdaudit` (and the CLI's start-up) must not import torch.
    if name in ("Finding", "Severity", "RULES"):
        from . import findings

        return getattr(findings, name)
    if name in ("audit_params", "ParamsReport"):
        from . import params

        return getattr(params, name)
    if name == "find_unregistered":
        from .registration import find_unregistered

        return find_unregistered
    raise AttributeError(f"module 'ssdaudit' has no attribute {name!r}")
