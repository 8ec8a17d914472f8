"""R004 N005: plain tensor attributes that forward uses (R004), or uses safely (an N005 note): one detector, the
verdict on each attribute decides the code."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ssdaudit.core.findings import RULES, Finding
from ssdaudit.registration.evidence import ParamsEvidence
from ssdaudit.registration.rules import Phase
from ssdaudit.registration.rules._members import dtype_name
from ssdaudit.registration.source_text import assignment_location, forward_use
from ssdaudit.registration.tracer import ProbeResult
from ssdaudit.registration.walk import MOVE_FUNCTIONS

if TYPE_CHECKING:
    from ssdaudit.registration.move_probe import MoveProbeResult


CODE = "R004"
ALSO = ("N005",)
PHASE = Phase.PROBE
ORDER = 40


def check(evidence: ParamsEvidence, earlier: Sequence[Finding]) -> Iterator[Finding]:
    """One finding per plain tensor attribute that forward reads (the probe saw it), or, when no pass ran, that the
    owner's forward source names."""
    index, probe = evidence.index, evidence.trace
    for path, tensor, owner, attr in index.tensor_attrs:
        if probe is not None and id(tensor) not in probe.used_tensors:
            continue
        if probe is None and forward_use(owner, attr) == "unread":
            continue  # no pass ran, and the owner's forward never names it: no evidence of use
        yield _tensor_attr_finding(path, tensor, owner, attr, probe, index.home, evidence.moves)


def _tensor_attr_finding(path: str, tensor: torch.Tensor, owner: nn.Module, attr: str, probe: ProbeResult | None,
                         home: tuple[torch.device, torch.dtype] | None, moves: "MoveProbeResult | None" = None) -> Finding:
    """R004 for a plain tensor attribute forward uses; an N005 note when nothing breaks on a device or dtype move.

    A floating tensor that forward moves with the input's device only (``.to(x.device)``) is R004 too: ``.half()``,
    ``.bfloat16()`` and ``.double()`` never convert it. The dtype-move probe (``moves``) decides; without its
    verdict, the arguments of the move the probe saw."""
    location = assignment_location(owner, attr)
    shape = tuple(tensor.shape)
    first = probe.first_use.get(id(tensor)) if probe is not None else None
    if probe is None and forward_use(owner, attr) == "moved":  # no pass ran: the owner's forward source decides
        first = "to"
    if tensor.dim() == 0:
        reason = "0-dim: it mixes with tensors on any device"
    elif first in MOVE_FUNCTIONS:
        if tensor.is_floating_point() and _misses_dtype(path, tensor, probe, moves):
            dtype = dtype_name(tensor.dtype)
            return RULES["R004"].finding(path,
                f"`{path}` is a plain {shape} {dtype} tensor that forward moves with the input's device only "
                f"(.{first}(...)): .half(), .bfloat16() and .double() never convert it, so it stays {dtype} while "
                "the model runs in float16/bfloat16/float64 (forward mixes dtypes); state_dict() does not save it",
                0, 0, location, {path: tensor})
        reason = (f"forward moves it first (.{first}(...), following the input's device and dtype) on every call: "
                  "on a GPU a host-to-device copy per call, where a buffer would move once")
    else:
        reason = None
    if reason is not None:
        return RULES["N005"].finding(path, f"`{path}` is a plain {shape} tensor that forward uses safely ({reason}); "
                       "state_dict() does not save it", 0, 0, location, {path: tensor})
    note = "" if probe is not None else " (use not verified: no forward probe)"
    how = "returned by forward" if first == "<returned>" else "used by the model"
    where = ""
    if home is not None and tensor.is_floating_point() and (tensor.device, tensor.dtype) != home:
        where = f" (it is {dtype_name(tensor.dtype)} on {tensor.device}, the model {dtype_name(home[1])} on {home[0]})"
    return RULES["R004"].finding(path,
        f"`{path}` is a plain {shape} tensor {how}{note}: it is not moved by .to() nor saved in state_dict(){where}",
        0, 0, location, {path: tensor},
    )


def _misses_dtype(path: str, tensor: torch.Tensor, probe: ProbeResult | None, moves: "MoveProbeResult | None") -> bool:
    """Whether forward's own move of ``tensor`` leaves its dtype behind when the model's changes: the dtype-move
    probe saw it read in its old dtype; without a verdict from that probe, the probe's record of the move's
    arguments (device only, or a fixed dtype)."""
    if moves is not None and moves.error is None:
        return any(s.name == path for s in moves.strays)
    return probe is not None and probe.move_kind.get(id(tensor)) in ("device", "fixed")

