"""T014: low-precision (fp16/bf16) parameters held by the optimizer itself, whose updates round to nothing.

At a step, among the weight elements with a nonzero gradient, most (over half) kept their exact value: the update
was below half the rounding step of the weight's dtype. fp32 parameters (with autocast or master weights) are never
looked at, so this costs nothing in mixed precision.
"""

from __future__ import annotations

import torch

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.gradflow.sharded import local

LOW = (torch.float16, torch.bfloat16)


class LowPrecisionUpdates(Check):
    code = "T014"

    def __init__(self) -> None:
        self.before: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_step_pre(self, ctx: Context) -> None:
        self.before = []
        if not ctx.due or ctx.closure_step:  # step(closure) computes its gradients inside: none to compare yet
            return
        for group in ctx.optimizer.param_groups:
            if float(group.get("lr", 0.0)) == 0:
                continue
            for p in group["params"]:
                if p.dtype in LOW and p.grad is not None:
                    self.before.append((p, local(p).detach().clone(), local(p.grad).detach() != 0))  # sharded: local shard

    @torch.no_grad()
    def on_step_post(self, ctx: Context) -> None:
        if not self.before:
            return
        moved = torch.stack([torch.stack([m.sum(), ((local(p) == old) & m).sum()]) for p, old, m in self.before]).sum(0)
        dtype = str(self.before[0][0].dtype).removeprefix("torch.")
        self.before = []
        ctx.defer(moved, lambda v: self._judge(ctx, int(v[0]), int(v[1]), dtype))

    def _judge(self, ctx: Context, nonzero: int, stuck: int, dtype: str) -> None:
        if nonzero and stuck * 2 > nonzero:
            ctx.report(self.code, f"step {ctx.current} left {stuck:,} of {nonzero:,} {dtype} weight values with a nonzero "
                       f"gradient unchanged ({100 * stuck / nonzero:.0f}%): the updates round to zero without fp32 "
                       "master weights", subject="optimizer")
