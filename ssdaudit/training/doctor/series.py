"""The run in numbers, per optimizer step: the loss, each param group's learning rate, the gradient norm of the
whole model and of its top-level modules, and the update-to-weight ratio (``RunSeries``; drawn by
``doctor.picture``, and in the JSON report).

``SeriesRecorder`` is one more listener of the ``Watch``'s events and reads only what the doctor already reads:

* the loss: the value a ``torch.nn.functional`` loss returned (the doctor's loss tap), kept on the device (a
  detached copy; the mean of an unreduced loss) and averaged per loss function over the step's calls;
* the learning rates: ``param_group["lr"]`` before each step (Python floats; a tensor lr is copied on the device);
* the gradient and update norms: the gradient-flow monitor's rows (``GradFlowMonitor``), which it computes on the
  device on the same steps. The recorder only notes which row belongs to which optimizer step.

It records on the steps ``every`` selects (``Context.due``, the first included), like every check that reads
values, and never moves a value to the host while training: losses are stacked on the device every 256 steps and
read, with the monitor's rows, once, when the series are asked for (``series()``). The cost on a recorded step is a
device copy of each scalar loss and one ``stack`` + ``mean`` per loss function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.gradflow.log import GRAD_NORM, UPDATE, WEIGHT
from ssdaudit.training.gradflow.monitor import GradFlowMonitor

CHUNK = 256  # recorded steps of losses stacked on the device into one tensor
MAX_MODULES = 12  # top-level modules kept in the series (the largest gradient norms); the picture shows fewer


@dataclass(frozen=True)
class RunSeries:
    """One optimizer's run, per recorded optimizer step (``steps``, 1-based): every list is aligned with ``steps``,
    NaN where a value was not seen. ``loss``: per loss function (``cross_entropy`` ...), the mean of the values it
    returned in the step (training calls only: gradients enabled). ``lr``: per param group (``group 0``), the rate
    the step used. ``grad_norm``: the L2 norm of all gradients (``model``) and of each top-level module's, as the
    optimizer saw them (after clipping and unscaling). ``update_ratio``: ||w' - w|| / ||w'|| over the optimizer's
    parameters (0 for a step that changed nothing)."""

    optimizer: str
    steps: list[int]
    loss: dict[str, list[float]] = field(default_factory=dict)
    lr: dict[str, list[float]] = field(default_factory=dict)
    grad_norm: dict[str, list[float]] = field(default_factory=dict)
    update_ratio: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "steps": list(self.steps), "loss": dict(self.loss), "lr": dict(self.lr),
                "grad_norm": dict(self.grad_norm), "update_ratio": list(self.update_ratio)}


class SeriesRecorder(Check):
    """Records a ``RunSeries`` from the ``Watch``'s events (see the module docstring)."""

    def __init__(self, monitor: GradFlowMonitor | None) -> None:
        self.monitor = monitor
        self.steps: list[int] = []
        self.lrs: list[list[float | torch.Tensor]] = []  # per recorded step, per param group
        self._pending: dict[str, list[torch.Tensor]] = {}  # loss name -> this step's values
        # loss name -> positions in ``steps`` and their values (one device tensor per chunk, or scalars not yet stacked)
        self._stacked: dict[str, list[tuple[list[int], torch.Tensor]]] = {}
        self._recent: dict[str, list[tuple[int, torch.Tensor]]] = {}
        self.rows: dict[int, int] = {}  # the monitor's row step -> the optimizer step it completed

    # --- events ------------------------------------------------------------------------------------

    def on_loss_value(self, ctx: Context, name: str, value: Any) -> None:
        if not (ctx.due and isinstance(value, torch.Tensor) and value.requires_grad and torch.is_grad_enabled()):
            return  # validation losses (no graph) and the steps not recorded
        if not (value.is_floating_point() and value.numel()):
            return
        v = value.detach()
        self._pending.setdefault(name, []).append(v.clone().reshape(()) if v.numel() == 1 else v.float().mean())

    def on_step_pre(self, ctx: Context) -> None:
        if not ctx.due:
            return
        rates: list[float | torch.Tensor] = []
        for group in ctx.optimizer.param_groups:
            lr = group.get("lr", math.nan)
            rates.append(lr.detach().clone() if isinstance(lr, torch.Tensor) else float(lr))
        self.lrs.append(rates)

    def on_step_post(self, ctx: Context) -> None:
        pending, self._pending = self._pending, {}
        if not ctx.due or len(self.lrs) <= len(self.steps):
            return
        k = len(self.steps)
        self.steps.append(ctx.current)
        for name, vals in pending.items():
            recent = self._recent.setdefault(name, [])
            recent.append((k, vals[0] if len(vals) == 1 else torch.stack(vals).mean()))
            if len(recent) >= CHUNK:  # one device tensor per chunk: no host sync, no tensor per step kept
                self._stacked.setdefault(name, []).append(([i for i, _ in recent], torch.stack([v for _, v in recent])))
                recent.clear()
        if self.monitor is not None:
            row = self.monitor.pending_step()
            if row is not None:
                self.rows[row] = ctx.current

    # --- results -----------------------------------------------------------------------------------

    def optimizer_step(self, row: int, current: int) -> int:
        """The optimizer step of the monitor's row step ``row``: the step it completed, else the first recorded
        step after it, else ``current`` (the step in progress)."""
        if row in self.rows:
            return self.rows[row]
        later = [s for r, s in self.rows.items() if r >= row]
        return min(later) if later else current

    def series(self, label: str) -> RunSeries:
        """The series so far (one host transfer of the recorded losses and of the monitor's rows)."""
        n = len(self.steps)
        loss: dict[str, list[float]] = {}
        for name in sorted({*self._stacked, *self._recent}):
            chunks = list(self._stacked.get(name, []))
            recent = self._recent.get(name, [])
            if recent:
                chunks.append(([i for i, _ in recent], torch.stack([v for _, v in recent])))
            values = loss[name] = [math.nan] * n
            for where, tensor in chunks:
                for i, v in zip(where, tensor.float().cpu().tolist()):
                    values[i] = float(v)
        groups = max((len(r) for r in self.lrs[:n]), default=0)
        lr = {f"group {g}": [float(r[g]) if g < len(r) else math.nan for r in self.lrs[:n]] for g in range(groups)}
        grad_norm, update_ratio = self._gradients(n)
        return RunSeries(label, list(self.steps), loss, lr, grad_norm, update_ratio)

    def _gradients(self, n: int) -> tuple[dict[str, list[float]], list[float]]:
        """Per recorded step: the gradient norm of the model and of its top-level modules, the update ratio."""
        if self.monitor is None or not self.monitor.tensors:
            return {}, []
        run = self.monitor.run()
        position = {s: k for k, s in enumerate(self.steps)}
        at = [(k, position[self.rows[int(r)]]) for k, r in enumerate(run.steps) if int(r) in self.rows
              and self.rows[int(r)] in position]
        grad = {"model": [math.nan] * n}
        ratio = [math.nan] * n
        if not at:
            return grad, ratio
        rows = run.stats[[k for k, _ in at]].astype(np.float64)  # (R, fields, P)
        where = [j for _, j in at]
        norms = np.sqrt((rows[:, GRAD_NORM, :] ** 2).sum(axis=1))
        for j, v in zip(where, norms):
            grad["model"][j] = float(v)
        opt = [k for k, t in enumerate(run.tensors) if t.in_optimizer]
        if opt:
            upd = np.sqrt((rows[:, UPDATE][:, opt] ** 2).sum(axis=1))
            w = np.sqrt((rows[:, WEIGHT][:, opt] ** 2).sum(axis=1))
            for j, u, ww in zip(where, upd, w):
                ratio[j] = float(u) / float(ww) if ww > 0 else math.nan  # Python floats: inf/nan without a warning
        modules = top_modules([t.name for t in run.tensors])
        sums = {m: np.sqrt((rows[:, GRAD_NORM][:, ks] ** 2).sum(axis=1)) for m, ks in modules.items()}
        if len(sums) > 1:
            keep = sorted(sums, key=lambda m: -float(np.nanmean(np.where(np.isfinite(sums[m]), sums[m], np.nan))
                                                     if np.isfinite(sums[m]).any() else 0.0))[:MAX_MODULES]
            for m in sorted(keep, key=list(modules).index):
                vals = [math.nan] * n
                for j, v in zip(where, sums[m]):
                    vals[j] = float(v)
                grad[m] = vals
        return grad, ratio


def top_modules(names: list[str]) -> dict[str, list[int]]:
    """Tensor names grouped by top-level module (the first dotted component; one level deeper while a single
    module holds everything, up to 3 levels): module path -> positions in ``names``."""
    depth = 1
    while depth < 3:
        prefixes = {".".join(n.split(".")[:depth]) for n in names if n.count(".") >= depth}
        if len(prefixes) != 1 or any(n.count(".") < depth for n in names):
            break
        depth += 1
    groups: dict[str, list[int]] = {}
    for k, n in enumerate(names):
        parts = n.split(".")
        key = ".".join(parts[:depth]) if len(parts) > depth else (".".join(parts[:-1]) or "(own parameters)")
        groups.setdefault(key, []).append(k)
    return groups
