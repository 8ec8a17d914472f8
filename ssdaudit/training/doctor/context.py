"""What every check of the doctor reads and writes: the watched objects, the events of the current step, findings.

A *step* is one ``optimizer.step()``. ``Context.events`` (a ``StepLog``) holds what happened since the last step, in
order (``events.StepEvent``): a backward pass reached the optimizer's parameters, a ``zero_grad()``, a
``clip_grad_norm_`` over its parameters, a ``GradScaler.scale``, a ``GradScaler.unscale_`` of this optimizer, a step
of another optimizer (the backwards before it were for that one: a GAN's generator loss also reaches the
discriminator's parameters, which the discriminator's optimizer clears before its own step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ssdaudit.core.findings import RULES, Finding, Location, Severity
from ssdaudit.core.frames import user_location
from ssdaudit.core.guard import raise_internal
from ssdaudit.training.doctor.events import StepLog
from ssdaudit.training.gradflow.monitor import unwrap_compiled

__all__ = ["Context", "raise_internal", "unwrap_compiled", "user_location", "user_path"]

def user_path(name: str) -> str:
    """A dotted module path as the user wrote it: without the ``_orig_mod`` step of a compiled submodule."""
    return ".".join(part for part in name.split(".") if part != "_orig_mod") if "_orig_mod" in name else name


@dataclass
class Context:
    """The shared state of one ``Watch``. ``step``: optimizer steps completed; ``current``: the 1-based step in
    progress (what findings name)."""

    model: nn.Module | None
    optimizer: torch.optim.Optimizer
    every: int = 1
    scaler: Any = None
    scheduler: Any = None
    label: str = "optimizer"  # how findings name the optimizer: "optimizer 2 (Adam, 1,234 parameters of `G`)"
    replicated: bool = False  # the watched model is a DistributedDataParallel: its ranks must stay equal
    step: int = 0
    events: StepLog = field(default_factory=StepLog)
    stack: list[nn.Module] = field(default_factory=list)  # the modules whose forward is running, outermost first
    closure_step: bool = False  # the current step() got a closure (LBFGS): it runs its own backward
    found: dict[tuple[str, str], Finding] = field(default_factory=dict)
    first_step: dict[str, int] = field(default_factory=dict)  # rule code -> the step it was first reported at
    loss_without_graph: int = 0  # loss calls since the last step whose input had no autograd graph
    internal_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # facts about the watch itself (ranks that sent no evidence)
    parallel: Any = None  # the ParallelSetup of a distributed run (``parallel.setup_of``), found at the first step
    monitor: Any = None  # the watch's GradFlowMonitor (its per-step statistics), when it runs one
    _names: dict[int, str] | None = None
    _parents: dict[int, nn.Module] | None = None
    _trained: set[int] = field(default_factory=set)
    _opt_ids: set[int] = field(default_factory=set)
    _trained_params: list[torch.Tensor] = field(default_factory=list)
    sharded: bool = False  # the optimizer's parameters are DTensors (FSDP2): read a gradient's local shard
    _deferred: list[tuple[torch.Tensor, Callable[[list[float]], None]]] = field(default_factory=list)

    @property
    def current(self) -> int:
        return self.step + 1

    @property
    def due(self) -> bool:
        """Whether checks that cost a host sync run at this step (every ``every``-th step, the first included)."""
        return self.step % self.every == 0

    # --- the optimizer's parameters --------------------------------------------------------------------

    def params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def refresh(self) -> None:
        """Re-read the optimizer's parameters (param groups can be added while training)."""
        self._opt_ids = {id(p) for p in self.params()}
        self._trained_params = [p for g in self.optimizer.param_groups for p in g["params"] if p.requires_grad]
        self._trained = {id(p) for p in self._trained_params}

    def trained_params(self) -> list[torch.Tensor]:
        """The optimizer's parameters that require gradients, as of the last ``refresh`` (every ``step()``)."""
        return self._trained_params

    @property
    def trained_ids(self) -> set[int]:
        """ids of the optimizer's parameters that require gradients."""
        return self._trained

    @property
    def optimizer_ids(self) -> set[int]:
        return self._opt_ids

    # --- names in the model ----------------------------------------------------------------------------

    def _index(self) -> None:
        self._names, self._parents = {}, {}
        if self.model is None:
            return
        for name, m in self.model.named_modules():
            self._names.setdefault(id(m), user_path(name) or type(m).__name__)
            for child in m.children():
                self._parents.setdefault(id(child), m)
        for name, p in self.model.named_parameters():
            self._names.setdefault(id(p), user_path(name))

    def name_of(self, obj: object) -> str:
        """The attribute path of a module or parameter in the model, else its type's name."""
        if self._names is None:
            self._index()
        assert self._names is not None
        return self._names.get(id(obj), type(obj).__name__ if isinstance(obj, nn.Module) else "<tensor>")

    def in_model(self, module: nn.Module) -> bool:
        if self._names is None:
            self._index()
        assert self._names is not None
        return id(module) in self._names

    def parent(self, module: nn.Module) -> nn.Module | None:
        if self._parents is None:
            self._index()
        assert self._parents is not None
        return self._parents.get(id(module))

    def trains(self, module: nn.Module) -> bool:
        """Whether any parameter of ``module`` (and its children) is trained by the optimizer."""
        return any(id(p) in self._trained for p in module.parameters())

    # --- values read from the device: one host sync per step ------------------------------------------------

    def defer(self, values: torch.Tensor, then: Callable[[list[float]], None]) -> None:
        """Read ``values`` (any shape, any real dtype, on any device) later: ``then(values.flatten().tolist())``
        runs when the step's reads are made, all together in one host sync (``read_deferred``, at the end of
        ``optimizer.step()``). Integer values are exact up to 2**53."""
        self._deferred.append((values.detach().flatten(), then))

    def read_deferred(self) -> None:
        """Make the reads ``defer`` queued: one ``torch.cat`` per device, one ``.tolist()`` (a single sync when the
        values are on one device), then each callback with its own values. A callback may queue more reads: they
        are made in the same call."""
        while self._deferred:
            queued, self._deferred = self._deferred, []
            by_device: dict[torch.device, list[int]] = {}
            for k, (v, _) in enumerate(queued):
                by_device.setdefault(v.device, []).append(k)
            values: list[list[float]] = [[] for _ in queued]
            for device, ks in by_device.items():
                dtype = torch.float32 if device.type == "mps" else torch.float64
                flat = torch.cat([queued[k][0].to(dtype) for k in ks]).tolist() if ks else []
                at = 0
                for k in ks:
                    n = queued[k][0].numel()
                    values[k] = flat[at:at + n]
                    at += n
            for (_, then), vals in zip(queued, values):
                then(vals)

    # --- findings --------------------------------------------------------------------------------------

    def report(self, code: str, message: str, path: str = "", subject: str | None = None,
               severity: Severity | None = None, params: int = 0, location: Location | None = None) -> None:
        """Record a finding of rule ``code`` once per (code, path or subject); the first message wins. ``location``:
        where in the user's code (default: the user's line running now; a check judging later passes the line it
        saw the evidence at)."""
        key = (code, path or subject or "")
        if key in self.found:
            return
        self.found[key] = RULES[code].finding(path, message, severity=severity, subject=subject, params=params,
                                              location=location or user_location(), step=self.current)
        self.first_step.setdefault(code, self.current)
