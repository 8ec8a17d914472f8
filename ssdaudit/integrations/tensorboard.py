"""Gradient flow in TensorBoard: per-layer gradient norms and update ratios as scalars, per-tensor gradient norms
as histograms, findings as text. Used by ``GradFlowMonitor(tb_dir=...)``, both training callbacks, and
``ssdaudit gradflow RUN_DIR --tensorboard DIR`` (which converts a log written earlier)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..findings import Finding
from ..gradflow.log import GRAD_NORM, UPDATE, WEIGHT, GradFlowRun, TrackedTensor


def summary_writer(log_dir: str | Path) -> Any:
    """A ``torch.utils.tensorboard.SummaryWriter``; a one-line error when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch's writer needs the tensorboard package
        from ..errors import UsageError

        raise UsageError("writing TensorBoard logs needs tensorboard: pip install 'ssdaudit[tensorboard]'") from exc
    return SummaryWriter(log_dir=str(log_dir))


def write_rows(writer: Any, tensors: list[TrackedTensor], steps: np.ndarray, stats: np.ndarray) -> None:
    """One scalar per layer and step for the gradient L2 norm and the update ratio ||w' - w|| / ||w||, and one
    histogram per step of the per-tensor gradient norms. ``stats``: (S, fields, P) as the log stores them."""
    layers: dict[str, list[int]] = {}
    for k, t in enumerate(tensors):
        layers.setdefault(t.layer, []).append(k)
    for row, step in zip(stats, steps):
        s = int(step)
        for layer, ks in layers.items():
            norm = float(np.sqrt((row[GRAD_NORM, ks].astype(np.float64) ** 2).sum()))
            writer.add_scalar(f"grad_norm/{layer}", norm, s)
            weight = float(np.sqrt((row[WEIGHT, ks].astype(np.float64) ** 2).sum()))
            if weight > 0:
                update = float(np.sqrt((row[UPDATE, ks].astype(np.float64) ** 2).sum()))
                writer.add_scalar(f"update_ratio/{layer}", update / weight, s)
        finite = row[GRAD_NORM][np.isfinite(row[GRAD_NORM])]
        if finite.size:
            writer.add_histogram("grad_norm_per_tensor", finite, s)


def write_findings(writer: Any, findings: list[Finding], step: int = 0) -> None:
    """The findings as one markdown text entry ("no findings" when clean)."""
    text = "\n".join(f"- **{f.rule} {f.name}** `{f.label}`: {f.message}" for f in findings) or "no findings"
    writer.add_text("ssdaudit/findings", text, step)


def write_run(run: GradFlowRun, findings: list[Finding], log_dir: str | Path) -> Path:
    """A whole gradient-flow log as TensorBoard events in ``log_dir``."""
    writer = summary_writer(log_dir)
    try:
        write_rows(writer, run.tensors, run.steps, run.stats)
        write_findings(writer, findings, int(run.steps[-1]) if len(run.steps) else 0)
    finally:
        writer.close()
    return Path(log_dir)
