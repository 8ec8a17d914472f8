"""Gradient flow in TensorBoard: per-layer gradient norms and update ratios as scalars, per-tensor gradient norms
as histograms, findings as text. Used by ``GradFlowMonitor(tb_dir=...)``, both training callbacks, and
``ssdaudit gradflow RUN_DIR --tensorboard DIR`` (which converts a log written earlier)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ssdaudit.core.findings import Finding
from ssdaudit.training.gradflow.log import GRAD_NORM, UPDATE, WEIGHT, GradFlowRun, TrackedTensor


def summary_writer(log_dir: str | Path) -> Any:
    """A ``torch.utils.tensorboard.SummaryWriter``; a one-line error when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch's writer needs the tensorboard package
        from ssdaudit.core.errors import UsageError

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


class TensorBoardSink:
    """``GradFlowMonitor(model, optimizer, sinks=[TensorBoardSink("runs/tb")])``: the monitor's rows as TensorBoard
    scalars and histograms as they are flushed, and its findings as text when it detaches. The writer is made on
    the first rows, so a run that records nothing leaves no event file."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    def write_rows(self, tensors: list[TrackedTensor], steps: np.ndarray, stats: np.ndarray) -> None:
        if self._writer is None:
            self._writer = summary_writer(self.log_dir)
        write_rows(self._writer, tensors, steps, stats)
        self._writer.flush()

    def close(self, findings: list[Finding], step: int) -> None:
        if self._writer is None:
            return
        write_findings(self._writer, findings, step)
        self._writer.close()
        self._writer = None
