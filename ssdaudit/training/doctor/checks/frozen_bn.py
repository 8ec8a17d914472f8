"""T007: BatchNorm in train mode in a frozen module: its statistics move although its parameters are frozen.

Frozen means: its affine parameters have requires_grad False, or (inside the watched model) the optimizer does not
hold them. A module outside the watched model with parameters that require gradients (a teacher that was never
``requires_grad_(False)``-ed, run under ``torch.no_grad()``) counts as frozen once the evidence is in: over two
steps its running statistics moved while its weights stayed exactly as they were, and no optimizer alive in the
process holds them. So another model with its own optimizer (a GAN's other half, stepped every k iterations), an
EMA teacher whose weights are copied in, or a teacher trained alongside is never taken for a frozen one.

Where the frozen module sits decides the severity. Inside the trained path the statistics adapting to the new data
is the recipe (torchvision's feature-extraction tutorial: a frozen backbone under a trained head): a note. It is
inside when its forward runs, with gradients enabled, inside a forward whose outermost module has parameters the
optimizer trains, or when the output of the outermost forward it ran in (under ``no_grad`` too) is the input of
such a forward in the same step (``head(backbone(x))``, views of it included: the same storage). Otherwise (a
distillation teacher, whose output is only a target; a module run by itself whose output goes nowhere trained) a
warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_flatten

from ssdaudit.core.findings import Severity
from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.averaged import held_by_optimizers
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.gradflow.sharded import local

EVIDENCE_STEPS = 2  # steps a candidate outside every optimizer is followed before it is judged


@dataclass
class _Candidate:
    module: _BatchNorm
    step: int  # the step it was first seen at
    weight: torch.Tensor  # copies at first sight (BatchNorm vectors: a few KB)
    running_mean: torch.Tensor


class FrozenBatchNormMoves(Check):
    code = "T007"
    module_types = (_BatchNorm,)  # and root calls: what a frozen module's output feeds

    def __init__(self) -> None:
        self.seen: dict[int, nn.Module] = {}  # frozen, outside the trained path: a warning
        self.noted: dict[int, nn.Module] = {}  # frozen, inside the trained path: a note
        self._root_trains: dict[int, bool] = {}  # id(outermost module) -> it holds trained parameters
        self.pending: dict[int, dict[int, nn.Module]] = {}  # id(outermost module) -> its frozen BatchNorm, undecided
        self.out_ptrs: dict[int, int] = {}  # storage address of a pending outermost module's output -> its id
        self.total: set[int] = set()
        self.candidates: dict[int, _Candidate] = {}
        self.judged: set[int] = set()
        self._held: set[int] = set()
        self._held_step = -1

    def on_module_pre(self, ctx: Context, module: nn.Module, args: tuple[Any, ...], root: bool) -> None:
        if root and self.out_ptrs and torch.is_grad_enabled() and self._trains(ctx, module):
            for a in tree_flatten(args)[0]:
                owner = self.out_ptrs.get(_storage(a)) if isinstance(a, torch.Tensor) else None
                if owner is not None and owner in self.pending:
                    self.noted.update(self.pending.pop(owner))
        if not isinstance(module, _BatchNorm) or not module.training or not module.track_running_stats:
            return
        weight = module.weight
        if weight is None or module.running_mean is None:
            return
        self.total.add(id(module))
        frozen = not weight.requires_grad or (ctx.in_model(module) and id(weight) not in ctx.optimizer_ids)
        if frozen and id(weight) not in ctx.optimizer_ids and id(weight) in self._held_elsewhere(ctx):
            return  # another optimizer trains it (a GAN's other half; Lightning toggles requires_grad per optimizer)
        if frozen:
            outer = ctx.stack[0] if ctx.stack else module
            if torch.is_grad_enabled() and self._trains(ctx, outer):
                self.noted[id(module)] = module
            else:
                self.pending.setdefault(id(outer), {})[id(module)] = module
        elif id(weight) not in ctx.optimizer_ids and id(module) not in self.judged and id(module) not in self.candidates:
            with torch.no_grad():
                self.candidates[id(module)] = _Candidate(module, ctx.current, weight.detach().clone(),
                                                         module.running_mean.detach().clone())

    def _held_elsewhere(self, ctx: Context) -> set[int]:
        """Ids of every parameter a live optimizer holds: one gc scan per step, only on steps that need it."""
        if self._held_step != ctx.current:
            self._held_step = ctx.current
            self._held = held_by_optimizers()
        return self._held

    def on_module_post(self, ctx: Context, module: nn.Module, output: Any, root: bool) -> None:
        if root and id(module) in self.pending:
            for t in tree_flatten(output)[0]:
                if isinstance(t, torch.Tensor):
                    self.out_ptrs[_storage(t)] = id(module)

    def _trains(self, ctx: Context, root: nn.Module) -> bool:
        known = self._root_trains.get(id(root))
        if known is None:
            known = self._root_trains[id(root)] = ctx.trains(root)
        return known

    def _confirmed(self, ctx: Context) -> list[nn.Module]:
        """Candidates followed for EVIDENCE_STEPS steps whose statistics moved, weights did not, and that no
        optimizer holds: frozen in all but name."""
        out: list[nn.Module] = []
        for key, c in list(self.candidates.items()):
            if ctx.current - c.step < EVIDENCE_STEPS:
                continue
            del self.candidates[key]
            self.judged.add(key)
            m = c.module
            assert m.weight is not None and m.running_mean is not None
            with torch.no_grad():
                moved = not torch.equal(local(m.running_mean), local(c.running_mean))  # sharded: this rank's shard
                fixed = torch.equal(local(m.weight), local(c.weight))
            if moved and fixed and not held_by_optimizers({id(p) for p in m.parameters()}):
                out.append(m)
        return out

    def on_step_pre(self, ctx: Context) -> None:
        if self.candidates:
            for m in self._confirmed(ctx):
                self.seen[id(m)] = m
        self._root_trains.clear()
        for modules in self.pending.values():
            self.seen.update(modules)
        self.pending.clear()
        self.out_ptrs.clear()
        if self.noted:
            first = next(iter(self.noted.values()))
            name = ctx.name_of(first)
            ctx.report(self.code, f"{len(self.noted)} of {len(self.total)} BatchNorm modules in train mode are frozen "
                       f"inside the trained path, e.g. {name}: their running statistics adapt to this data while the "
                       "trained layers after them learn (the feature-extraction recipe; call .eval() on them if "
                       "the statistics should stay as loaded)", path=name, severity=Severity.INFO)
            self.noted.clear()
        if self.seen:
            first = next(iter(self.seen.values()))
            name = ctx.name_of(first) if ctx.in_model(first) else (_user_path(first) or ctx.name_of(first))
            ctx.report(self.code, f"{len(self.seen)} of {len(self.total)} BatchNorm modules in train mode are frozen "
                       f"(requires_grad False, not in the optimizer, or in no optimizer and never updated), e.g. "
                       f"{name}: their running statistics move with every batch (call .eval() on the "
                       "frozen module after model.train(); deliberate? --ignore T007, or watch(..., ignore=['T007']))",
                       path=name)
            self.seen.clear()


def _user_path(module: nn.Module, frames: int = 8) -> str:
    """``teacher.1``: the module's path from a variable of the user's code (the frames outside ssdaudit and torch,
    innermost first) that holds it or a model containing it; "" when none does. Runs once, when T007 reports a
    module outside the watched model (a standalone teacher), which ``Context.name_of`` can only call by its type."""
    import itertools
    import sys

    from ssdaudit.core.frames import user_frames

    for frame in itertools.islice(user_frames(sys._getframe(1)), frames):
        for scope in (frame.f_locals, frame.f_globals):
            for key, value in list(scope.items()):
                if isinstance(value, nn.Module) and not key.startswith("_"):
                    for sub_name, sub in value.named_modules():
                        if sub is module:
                            return f"{key}.{sub_name}" if sub_name else key
    return ""


def _storage(t: torch.Tensor) -> int:
    """The address of ``t``'s storage (shared by its views), or -1 when it has none (a fake or sparse tensor)."""
    try:
        return int(t.untyped_storage().data_ptr())
    except Exception:  # no storage: never matched
        return -1
