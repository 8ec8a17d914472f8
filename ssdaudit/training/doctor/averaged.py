"""Averages and copies: parameters the gradient-flow monitor found unreached (G002) that change without a gradient.

An exponential moving average of the model kept beside it (timm's ``ModelEma``/``ModelEmaV2``/``V3``,
``torch.optim.swa_utils.AveragedModel``), a momentum teacher (BYOL, DINO, mean teacher) or a Polyak target network
is a registered module whose parameters often keep ``requires_grad=True``, sit in no optimizer, get no gradient
and change every step: that is its job, not a dead layer. The evidence, per unreached parameter:

* it is in no optimizer alive in the process (one garbage-collector scan, when findings are made);
* it has no gradient (``.grad`` is None or all zeros) when findings are made;
* it changed since the first step: its version counter moved (in-place updates: ``lerp_``, ``copy_``,
  ``mul_().add_()``) or its L2 norm did (updates through ``.data``, which has a version counter of its own).

The snapshot (version counters and one ``torch._foreach_norm`` kept on the device) is taken once, at the first
step after the monitor's discovery; the comparison syncs once, when findings are made.
"""

from __future__ import annotations

import gc

import torch

from ssdaudit.core.findings import Finding
from ssdaudit.training.gradflow.monitor import GradFlowMonitor


class AveragedCopies:
    """Follows the unreached, optimizer-less parameters of one ``GradFlowMonitor``."""

    def __init__(self) -> None:
        self._names: list[str] = []
        self._tensors: list[torch.Tensor] = []
        self._versions: list[int] = []
        self._norms: torch.Tensor | None = None  # (K,) float32 on the parameters' device
        self._taken = False

    def snapshot(self, monitor: GradFlowMonitor) -> None:
        """Record the candidates once, after the monitor's first backward (no host sync)."""
        if self._taken or not monitor.tensors:
            return
        self._taken = True
        for t, obj in zip(monitor.tensors, monitor._objs):
            if t.registered and not t.reached and not t.in_optimizer and obj.layout == torch.strided:
                self._names.append(t.name)
                self._tensors.append(obj)
                self._versions.append(obj._version)
        if self._tensors:
            with torch.no_grad():
                self._norms = torch.stack(torch._foreach_norm([p.detach() for p in self._tensors])).float()

    def updated_without_gradient(self) -> set[str]:
        """Names of the candidates that changed, have no gradient and are held by no live optimizer."""
        if not self._tensors or self._norms is None:
            return set()
        with torch.no_grad():
            norms = torch.stack(torch._foreach_norm([p.detach() for p in self._tensors])).float()
            moved_norm = (norms != self._norms).tolist()  # one host sync, when findings are made
        changed = [k for k, p in enumerate(self._tensors) if p._version != self._versions[k] or moved_norm[k]]
        if not changed:
            return set()
        held = held_by_optimizers({id(self._tensors[k]) for k in changed})
        out = set()
        for k in changed:
            p = self._tensors[k]
            if id(p) in held or (p.grad is not None and bool(p.grad.any())):
                continue
            out.add(self._names[k])
        return out

    def filter(self, findings: list[Finding]) -> list[Finding]:
        """``findings`` without the G002 findings whose every parameter is an average or a copy."""
        if not any(f.rule == "G002" for f in findings):
            return findings
        copies = self.updated_without_gradient()
        if not copies:
            return findings
        return [f for f in findings if not (f.rule == "G002" and f.members and set(f.members) <= copies)]


def held_by_optimizers(ids: set[int] | None = None) -> set[int]:
    """The subset of ``ids`` (parameter ids) that a live ``torch.optim.Optimizer`` holds; ``None``: every parameter
    id any live optimizer holds. One garbage-collector scan per call."""
    held: set[int] = set()
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.optim.Optimizer):  # type(), not isinstance: no lazy module's __class__
            held.update(id(p) for g in obj.param_groups for p in g["params"] if ids is None or id(p) in ids)
    return held


def trained_elsewhere(findings: list[Finding], model: "torch.nn.Module | None") -> list[Finding]:
    """``findings`` without the G003 findings ("gradients but in no optimizer param_group") whose every parameter
    another live optimizer holds: one module trained by two optimizers (Lightning's manual optimization builds a
    GAN's both over one LightningModule) is trained, only not by this watch's optimizer (one gc scan, only when
    there is such a finding)."""
    if model is None or not any(f.rule == "G003" and f.members for f in findings):
        return findings
    named = dict(model.named_parameters())
    wanted = {id(named[n]) for f in findings if f.rule == "G003" for n in f.members if n in named}
    held = held_by_optimizers(wanted)

    def elsewhere(f: Finding) -> bool:
        return bool(f.members) and all(n in named and id(named[n]) in held for n in f.members)

    return [f for f in findings if not (f.rule == "G003" and elsewhere(f))]
