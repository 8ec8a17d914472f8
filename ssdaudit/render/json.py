"""The ``--format json`` document of any report: its ``to_dict()``, indented, NaN and infinities as strings
(strict JSON parsers reject bare ``NaN``)."""

from __future__ import annotations

import json
import math
from typing import Any

from ssdaudit.core.report import Report


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf"
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def render_json(data: dict[str, Any] | Report) -> str:
    """One JSON document (a report's ``to_dict()``, or a dict), strict JSON: no bare NaN or Infinity."""
    doc = data.to_dict() if isinstance(data, Report) else data
    return json.dumps(_finite(doc), indent=2, allow_nan=False)
