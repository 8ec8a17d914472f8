"""The gradient-flow log: what a run followed (``TrackedTensor``), its per-step statistics (``GradFlowRun``), and
reading a log back from disk (``chunk_*.npz`` + ``index.json``, as ``GradFlowMonitor`` writes them)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ssdaudit.core.errors import LoadError
from ssdaudit.core.findings import Finding

if TYPE_CHECKING:
    from ssdaudit.training.gradflow.trace import ForwardTrace

STAT_FIELDS = ("grad_norm", "grad_max", "grad_l1", "update_norm", "weight_norm", "lr")
GRAD_NORM, GRAD_MAX, GRAD_L1, UPDATE, WEIGHT, LR = range(6)
N_FIELDS = len(STAT_FIELDS)
LOG_VERSION = 2  # version 1 logs (no "lr" row, no dtypes) are read with lr unknown (NaN)
UNREGISTERED = "<unregistered>"


@dataclass
class TrackedTensor:
    """One tensor the monitor follows: a trainable registered parameter, or a leaf that gets gradients."""

    name: str
    shape: tuple[int, ...]
    numel: int
    registered: bool
    in_optimizer: bool
    reached: bool  # a gradient flows to it from the model's outputs
    dtype: str = "float32"

    @property
    def layer(self) -> str:
        return self.name.rsplit(".", 1)[0] if "." in self.name else self.name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "numel": self.numel, "layer": self.layer,
                "registered": self.registered, "in_optimizer": self.in_optimizer, "reached": self.reached,
                "dtype": self.dtype}


@dataclass
class GradFlowRun:
    """A gradient-flow log: the tensors followed, the optimizer's strays, and one stats row per recorded step."""

    tensors: list[TrackedTensor]
    stale_optimizer: list[dict[str, Any]]  # optimizer tensors that are not model parameters
    steps: np.ndarray  # (S,) step numbers, 1-based
    stats: np.ndarray  # (S, 6, P) float32, fields in STAT_FIELDS order (lr NaN where unknown)
    every: int = 1
    warnings: list[str] = field(default_factory=list)
    has_optimizer: bool = True
    # the loss was ssdaudit's guess (the sum of the outputs' means: no compute_loss given, and forward did not
    # return a scalar loss itself): a module forward never calls may be one only the real criterion calls
    loss_guessed: bool = False
    # the probe's first forward + loss (``ssdaudit gradflow``): which modules ran and where the graph was cut. None
    # for a user's own loop and a log read back: G002 then judges without it
    forward: "ForwardTrace | None" = None

    def layers(self) -> list[str]:
        seen: dict[str, None] = {}
        for t in self.tensors:
            seen.setdefault(t.layer, None)
        return list(seen)


class RowSink(Protocol):
    """Somewhere else the monitor's rows go as they are flushed (TensorBoard: ``integrations.tensorboard``).
    Called on the writing rank only."""

    def write_rows(self, tensors: list[TrackedTensor], steps: np.ndarray, stats: np.ndarray) -> None:
        """``stats``: (S, fields, P) for the S recorded ``steps`` (as the log stores them)."""

    def close(self, findings: list[Finding], step: int) -> None:
        """The run ended (the monitor detached) with these findings at optimizer step ``step``."""


def assemble_run(tensors: list[TrackedTensor], stale: list[dict[str, Any]], history: list[tuple[np.ndarray, np.ndarray]],
                 every: int, has_optimizer: bool, warnings: list[str] | None = None) -> GradFlowRun:
    p = len(tensors)
    if history:
        steps = np.concatenate([h[0] for h in history])
        stats = np.concatenate([h[1] for h in history])
    else:
        steps, stats = np.zeros(0, dtype=np.int64), np.zeros((0, N_FIELDS, p), dtype=np.float32)
    return GradFlowRun(list(tensors), list(stale), steps, stats, every, list(warnings or []), has_optimizer)


# --- reading a log back -----------------------------------------------------------------------------


def find_log_dir(path: str | Path) -> Path | None:
    """The folder holding index.json: ``path`` itself, or ``path/gradflow`` (a trainer's RUN_DIR)."""
    path = Path(path)
    for candidate in (path, path / "gradflow"):
        if (candidate / "index.json").is_file():
            return candidate
    return None


def read_gradflow_log(path: str | Path) -> GradFlowRun:
    """Read a log written by GradFlowMonitor. A truncated or corrupt chunk ends the read with a warning."""
    path = Path(path)
    if not path.exists():
        raise LoadError(f"no such run directory: {path}")
    log = find_log_dir(path)
    if log is None:
        raise LoadError(
            f"no gradflow log in {path} (no index.json): train with `ssdlite train --gradflow` or run "
            "`ssdaudit gradflow TARGET --out DIR`"
        )
    try:
        index = json.loads((log / "index.json").read_text())
        tensors = [
            TrackedTensor(str(t["name"]), tuple(int(d) for d in t["shape"]), int(t["numel"]), bool(t["registered"]),
                          bool(t["in_optimizer"]), bool(t["reached"]), str(t.get("dtype", "float32")))
            for t in index["tensors"]
        ]
        stale = [{"group": int(x["group"]), "index": int(x["index"]), "shape": [int(d) for d in x["shape"]],
                  "numel": int(x["numel"])} for x in index["stale_optimizer"]]
        every, has_opt = int(index["every"]), bool(index.get("has_optimizer", True))
        if every < 1:
            raise ValueError(f"every = {every}")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LoadError(f"{log / 'index.json'} is not a gradflow index ({exc.__class__.__name__}: {exc})") from exc
    history: list[tuple[np.ndarray, np.ndarray]] = []
    warnings: list[str] = []
    for chunk in sorted(log.glob("chunk_*.npz")):
        try:
            with np.load(chunk, allow_pickle=False) as data:
                steps, stats = data["steps"], data["stats"]
            if stats.ndim != 3 or stats.shape[1] not in (5, N_FIELDS) or stats.shape[2] != len(tensors) or len(steps) != len(stats):
                raise ValueError(f"shape {stats.shape} does not match the index")
            if stats.shape[1] == 5:  # a version-1 log: learning rates unknown
                stats = np.concatenate([stats, np.full((len(stats), 1, len(tensors)), np.nan, np.float32)], axis=1)
        except Exception as exc:
            warnings.append(f"{chunk.name} is truncated or corrupt ({exc.__class__.__name__}); "
                            f"showing the {sum(len(h[0]) for h in history)} steps before it")
            break
        history.append((steps, stats))
    return assemble_run(tensors, stale, history, every, has_opt, warnings)


