"""What every check of the doctor reads and writes: the watched objects, the events of the current step, findings.

A *step* is one ``optimizer.step()``. ``Context.events`` holds what happened since the last step, in order:
``B`` a backward pass reached the optimizer's parameters, ``Z`` a ``zero_grad()``, ``C`` a ``clip_grad_norm_`` over
its parameters, ``S`` a ``GradScaler.scale``, ``U`` a ``GradScaler.unscale_`` of this optimizer, ``O`` a step of
another optimizer (the backwards before it were for that one: a GAN's generator loss also reaches the
discriminator's parameters, which the discriminator's optimizer clears before its own step).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssdaudit.core.findings import RULES, Finding, Location, Severity

# Frames in these folders are library code (ours, torch's, the standard library's, installed packages'): the user's
# line is the innermost frame outside all of them.
_LIBRARY_DIRS = tuple(str(Path(d).resolve()) + os.sep for d in {
    str(Path(__file__).resolve().parents[2]), str(Path(torch.__file__).resolve().parent),
    *(sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib"))} if d)


def user_location() -> Location | None:
    """The file:line of the user's code that led here (the ``optimizer.step()``, ``loss.backward()`` or loss call
    that triggered a hook): the innermost Python frame outside ssdaudit, torch, the standard library and installed
    packages. None when there is none (a hook run by a CUDA autograd thread, a library's own training loop)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith("<") and not os.path.realpath(name).startswith(_LIBRARY_DIRS):
            path = Path(name)
            try:
                shown = str(path.resolve().relative_to(Path.cwd()))
            except ValueError:
                shown = name
            return Location(shown, frame.f_lineno)
        frame = frame.f_back  # type: ignore[assignment]
    return None


def raise_internal() -> bool:
    """Whether a failing check propagates its exception (``SSDAUDIT_RAISE_INTERNAL=1``, set by the tests) instead
    of being recorded: a bug of ours must never break the user's training."""
    return os.environ.get("SSDAUDIT_RAISE_INTERNAL", "") not in ("", "0")


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
    events: list[str] = field(default_factory=list)
    stack: list[nn.Module] = field(default_factory=list)  # the modules whose forward is running, outermost first
    closure_step: bool = False  # the current step() got a closure (LBFGS): it runs its own backward
    found: dict[tuple[str, str], Finding] = field(default_factory=dict)
    first_step: dict[str, int] = field(default_factory=dict)  # rule code -> the step it was first reported at
    loss_without_graph: int = 0  # loss calls since the last step whose input had no autograd graph
    internal_errors: list[str] = field(default_factory=list)
    monitor: Any = None  # the watch's GradFlowMonitor (its per-step statistics), when it runs one
    _names: dict[int, str] | None = None
    _parents: dict[int, nn.Module] | None = None
    _trained: set[int] = field(default_factory=set)
    _opt_ids: set[int] = field(default_factory=set)

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
        self._trained = {id(p) for g in self.optimizer.param_groups for p in g["params"] if p.requires_grad}

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
            self._names.setdefault(id(m), name or type(m).__name__)
            for child in m.children():
                self._parents.setdefault(id(child), m)
        for name, p in self.model.named_parameters():
            self._names.setdefault(id(p), name)

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

    # --- findings --------------------------------------------------------------------------------------

    def report(self, code: str, message: str, path: str = "", subject: str | None = None,
               severity: Severity | None = None, params: int = 0) -> None:
        """Record a finding of rule ``code`` once per (code, path or subject); the first message wins."""
        key = (code, path or subject or "")
        if key in self.found:
            return
        self.found[key] = RULES[code].finding(path, message, severity=severity, subject=subject, params=params,
                                              location=user_location())
        self.first_step.setdefault(code, self.current)
