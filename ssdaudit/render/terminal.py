"""The terminal view of any report: ``render(report, console)``.

The renderers of torch-free reports (lint, check) live in ``render.text``; those of the reports that need torch
(params, diff, gradflow, watch) in ``render.model_text``, imported here only when such a report arrives, so that
``ssdaudit lint`` renders without torch installed.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from ssdaudit.core.report import Report
from ssdaudit.render.text import render_text


def render(report: Report, console: Console, **options: Any) -> None:
    """Print ``report`` on ``console`` with its registered renderer (``options``: the renderer's own, e.g. ``top``
    for a diff). Raises ``TypeError`` for a report type that no renderer is registered for."""
    if render_text.dispatch(type(report)) is render_text.registry[object]:
        import ssdaudit.render.model_text  # noqa: F401  (registers the torch reports' renderers; torch is heavy)
    render_text(report, console, **options)
