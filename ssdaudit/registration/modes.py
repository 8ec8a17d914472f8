"""The train/eval driver: the forward probe in train mode (autograd recording) and in eval mode (no_grad).

Forward paths that run only in one mode (a tensor read only at inference) are seen either way; a mode whose pass
fails is recorded, and the other still counts. ``ProbeOutcome.status`` is the evidence the rest reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ssdaudit.core.errors import ProbeError
from ssdaudit.registration.evidence import ProbeStatus
from ssdaudit.registration.tracer import ProbeResult, probe_forward


@dataclass
class ProbeOutcome:
    """The forward probe in both modes: the merged observations, and what failed (mode -> error)."""

    result: ProbeResult | None
    failures: dict[str, str]


def probe_modes(model: nn.Module, example_input: Any, extra_modules: Sequence[nn.Module] = ()) -> ProbeOutcome:
    """Probe forward in train mode (autograd recording, as in training) and in eval mode (under no_grad).

    Forward paths that run only in one mode (a tensor read only at inference) are seen either way. Every module's
    mode is restored afterwards. A mode whose pass fails is recorded in ``failures``; the other still counts.
    """
    modules = [*model.modules(), *(m for e in extra_modules for m in e.modules())]
    modes = [(m, m.training) for m in modules]
    merged: ProbeResult | None = None
    failures: dict[str, str] = {}
    produced: dict[int, Any] = {}
    try:
        for mode in ("train", "eval"):
            for m in modules:
                m.training = mode == "train"
            try:
                one = probe_forward(model, example_input, extra_modules, grad=mode == "train", produced=produced)
            except ProbeError as exc:
                failures[mode] = str(exc)
                continue
            one.modes.append(mode)
            if merged is None:
                merged = one
            else:
                merged.merge(one)
    finally:
        for m, training in modes:
            m.training = training
    return ProbeOutcome(merged, failures)



def probe_status(outcome: ProbeOutcome | None, device: str) -> ProbeStatus:
    """The evidence of a probe run on ``device`` ("cpu", "meta", "placeholder"); no outcome: no probe was tried."""
    if outcome is None:
        return ProbeStatus.skipped()
    modes = tuple(outcome.result.modes) if outcome.result is not None else ()
    return ProbeStatus(device, modes, tuple(outcome.failures.items()))
