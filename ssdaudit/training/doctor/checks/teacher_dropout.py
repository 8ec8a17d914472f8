"""T018: a teacher run in train mode whose Dropout perturbs every target.

The evidence, per candidate forward: an outermost forward (no other forward encloses it), or the outermost
forward of a ``torch.no_grad()`` region inside a forward that began with gradients enabled (a teacher called inside
the wrapper's own ``forward``):

* it ran a dropout with ``training=True`` and ``p > 0`` (``nn.Dropout`` and ``F.dropout`` both reach the tap);
* its output carries no autograd graph (computed under ``torch.no_grad()``, or from frozen parameters), and none
  of its parameters is trained by the watched optimizer;
* a loss call in the same step took a floating-point target without a graph, of the shape of one of that output's
  tensors (soft targets ``softmax(t / T)``, features for an MSE): the output fed the loss as a target (a frozen
  encoder whose features feed a trained head is no teacher: the loss's target is the label then);
* no live optimizer holds its parameters (one garbage-collector scan, when the finding is made): a peer trained by
  its own optimizer (mutual learning, a GAN's other half) is not a teacher.

A teacher with BatchNorm in train mode is T007's (its statistics move too): T018 is for stochastic layers alone.
No host sync.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_flatten

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.averaged import held_by_optimizers
from ssdaudit.training.doctor.checks.frozen_bn import _user_path
from ssdaudit.training.doctor.context import Context


class TeacherDropout(Check):
    code = "T018"
    grad_calls = False  # root forwards, and forwards under no_grad inside one (a teacher called inside forward)

    def __init__(self) -> None:
        # the candidate forwards running now, outermost first: [module, ran an active dropout, began with grad]
        self.running: list[list[Any]] = []
        self.pending: dict[int, tuple[nn.Module, set[tuple[int, ...]]]] = {}  # graph-free random forwards of this
        # step not yet used by a loss, with the shapes of their outputs
        self.used: dict[int, nn.Module] = {}  # ... whose step had a loss with a graph-free floating target
        self.judged: set[int] = set()

    def on_module_pre(self, ctx: Context, module: nn.Module, args: tuple[Any, ...], root: bool) -> None:
        grad = torch.is_grad_enabled()
        if root:
            self.running = [[module, False, grad]]
        elif not grad and self.running and self.running[-1][2]:
            self.running.append([module, False, False])

    def on_dropout(self, ctx: Context, p: float, training: bool) -> None:
        if training and p > 0:
            for c in self.running:
                c[1] = True

    def on_module_post(self, ctx: Context, module: nn.Module, output: Any, root: bool) -> None:
        if not self.running or self.running[-1][0] is not module:
            return
        _, random, _ = self.running.pop()
        if not random or id(module) in self.judged or id(module) in self.used:
            return
        tensors = [t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)]
        if not tensors or any(t.grad_fn is not None or t.requires_grad for t in tensors) or ctx.trains(module):
            return
        self.pending[id(module)] = (module, {tuple(t.shape) for t in tensors})

    def on_loss(self, ctx: Context, name: str, input: torch.Tensor, target: torch.Tensor, options: dict[str, Any]) -> None:
        if not self.pending or not isinstance(target, torch.Tensor) or not target.is_floating_point():
            return
        if target.grad_fn is not None or target.requires_grad or not input.requires_grad:
            return
        for key, (m, shapes) in list(self.pending.items()):
            if tuple(target.shape) in shapes:
                self.used[key] = m
                del self.pending[key]

    def on_step_pre(self, ctx: Context) -> None:
        self.pending.clear()
        for key, m in list(self.used.items()):
            del self.used[key]
            self.judged.add(key)
            if any(isinstance(b, _BatchNorm) and b.training for b in m.modules()):
                continue  # T007 names it
            params = {id(p) for p in m.parameters()}
            if params and held_by_optimizers(params):
                continue
            name = ctx.name_of(m) if ctx.in_model(m) else (_user_path(m) or ctx.name_of(m))
            drops = sum(1 for d in m.modules() if isinstance(d, nn.modules.dropout._DropoutNd) and d.training and d.p > 0)
            what = f"{drops} Dropout module(s)" if drops else "functional dropout"
            ctx.report(self.code, f"{name} ({type(m).__name__}) computes the loss's target without gradients and "
                       f"trains nothing, yet runs {what} in train mode at step {ctx.current}: every target is "
                       f"perturbed by a random sub-network (call {name}.eval(); deliberate? --ignore T018)", path=name)
