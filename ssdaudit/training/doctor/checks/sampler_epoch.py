"""T028: a shuffling ``DistributedSampler`` whose ``set_epoch`` is never called: every epoch repeats one order.

Local evidence: the sampler seeds its permutation with ``seed + epoch``, so its epoch must change between epochs. The
check fingerprints the model's input on its first training forward and on the forward one epoch later (the loader's
length in batches, counted in training forwards of the watched model); the same batch at both, with the sampler's
epoch unchanged, is the repeated order (random augmentation changes the batch: then nothing is claimed). Two host
reads in all, only in a distributed run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.doctor.parallel import fingerprint, is_model_forward, setup_of
from ssdaudit.training.doctor.ranks import world


class SamplerEpochNeverSet(Check):
    code = "T028"
    module_types = ()  # root calls only: the model's forward

    def __init__(self) -> None:
        self.forwards = 0  # training forwards of the watched model
        self.first: torch.Tensor | None = None  # fingerprint of the first one's input
        self.epochs: dict[int, int] = {}  # id(sampler) -> its epoch at the first forward
        self.pending: list[tuple[Any, torch.Tensor]] = []  # (sampler, fingerprint one epoch later), read at the step
        self.done = False

    def on_module_pre(self, ctx: Context, module: nn.Module, args: tuple[Any, ...], root: bool) -> None:
        if self.done or not root or not is_model_forward(ctx, module):
            return
        self.forwards += 1
        if self.forwards == 1:
            if world()[1] < 2:  # not a distributed run: nothing to do, ever
                self.done = True
                return
            self.first = fingerprint(args)
            return
        setup = ctx.parallel
        if setup is None or self.first is None:
            return
        for ref, batches in setup.samplers:
            sampler = ref()
            if sampler is not None and self.forwards == batches + 1:
                fp = fingerprint(args)
                if fp is not None:
                    self.pending.append((sampler, fp))
        if self.forwards > max((n for _, n in setup.samplers), default=0) + 1:
            self.done = True

    def on_step_pre(self, ctx: Context) -> None:
        setup = setup_of(ctx)
        if setup is None or not setup.samplers:
            self.done = self.done or ctx.step > 0
            return
        if ctx.step == 0:
            self.epochs = {id(s): int(getattr(s, "epoch", 0)) for s in (r() for r, _ in setup.samplers) if s is not None}
        pending, self.pending = self.pending, []
        for sampler, fp in pending:
            if self.first is None or int(getattr(sampler, "epoch", 0)) != self.epochs.get(id(sampler)):
                continue
            if fp.shape == self.first.shape and bool(torch.equal(fp, self.first)):
                n = len(sampler)
                ctx.report(self.code, f"the DistributedSampler of a loader of {n} samples per rank (shuffle=True) "
                           f"stayed at epoch {sampler.epoch} across epochs: set_epoch() is never called, so every "
                           "epoch draws the same order (the first batch of the second epoch equals the first "
                           "epoch's)", subject="sampler")
