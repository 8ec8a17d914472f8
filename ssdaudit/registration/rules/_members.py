"""What several rules of ``params`` ask about the members the walk found: how many parameters they hide (each
counted once per audit), how to name them, whether ``.eval()`` matters to them, whether forward read them, and
whether they sit on another device or dtype than the model. Not a rule (discovery skips ``_`` modules)."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import AbstractSet, Any

import torch
from torch import nn

from ssdaudit.registration.model_index import ModelIndex
from ssdaudit.registration.tracer import ProbeResult
from ssdaudit.registration.walk import Hit

_MODE_DEPENDENT = (
    nn.modules.dropout._DropoutNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.RReLU,
)


def is_mode_dependent(module: nn.Module) -> bool:
    """``module`` (or one inside it) behaves differently under ``.train()`` and ``.eval()`` and holds no parameter
    that would already make it an error (Dropout, BatchNorm without affine, InstanceNorm tracking statistics)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.weight is not None:
            continue  # has parameters: already an error for the parameters it loses
        if isinstance(m, _MODE_DEPENDENT) and (not isinstance(m, nn.modules.instancenorm._InstanceNorm) or m.track_running_stats):
            return True
    return False


def unregistered_params(objs: list[Any], registered: AbstractSet[int], counted: set[int]) -> int:
    """Parameter values (elements) of ``objs`` (modules or tensors) outside ``registered`` and not yet in
    ``counted`` (ids; updated here: a parameter is counted once)."""
    total = 0
    for obj in objs:
        params = [obj] if isinstance(obj, torch.Tensor) else list(obj.parameters())
        for p in params:
            if id(p) not in registered and id(p) not in counted:
                counted.add(id(p))
                total += p.numel()
    return total


def describe(objs: list[Any]) -> str:
    """"2 Linear, 1 Dropout": the commonest classes of ``objs``."""
    kinds = collections.Counter(type(o).__name__ for o in objs)
    return ", ".join(f"{n} {k}" for k, n in kinds.most_common(3)) + (", ..." if len(kinds) > 3 else "")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def read_by_forward(obj: Any, probe: ProbeResult | None) -> bool:
    """The probe saw forward read this tensor, or call this module (or one inside it). No probe: no evidence."""
    if probe is None:
        return False
    if isinstance(obj, torch.Tensor):
        return id(obj) in probe.used_tensors
    return any(id(m) in probe.called for m in obj.modules())


def walk_hits(index: ModelIndex, probe: ProbeResult | None) -> Iterator[Hit]:
    """The walk's hits the container rules judge: all but torch's own bookkeeping that forward never reads."""
    return (h for h in index.hits if not h.torch_internal or read_by_forward(h.obj, probe))


def walk_counted(index: ModelIndex, probe: ProbeResult | None) -> set[int]:
    """Ids of the unregistered parameters the container rules count (the rules after them count the rest)."""
    counted: set[int] = set()
    unregistered_params([h.obj for h in walk_hits(index, probe)], index.registered_tensors, counted)
    return counted


def move_note(objs: list[Any], home: tuple[torch.device, torch.dtype] | None, failure: str | None) -> str:
    """" (.cuda() never moved it: ...; forward fails with: ...)" when these members sit elsewhere than the model."""
    if home is None:
        return ""
    tensors = [t for o in objs for t in ([o] if isinstance(o, torch.Tensor) else [*o.parameters(), *o.buffers()])]
    stray = [t for t in tensors if t.is_floating_point() and (t.device, t.dtype) != home]
    if not stray:
        return ""
    t = stray[0]
    moves = []
    if t.device != home[0]:
        moves.append(f".to({home[0].type!r})/.{home[0].type}()" if home[0].type in ("cuda", "cpu") else f".to({home[0].type!r})")
    if t.dtype != home[1]:
        moves.append(f".to({dtype_name(home[1])})")
    text = (f"; {' and '.join(moves)} never moved it: it is {dtype_name(t.dtype)} on {t.device} while the model is "
            f"{dtype_name(home[1])} on {home[0]}")
    return text + (f"; forward fails with: {failure}" if failure else "")


def explains_failure(index: ModelIndex, failure: str | None) -> bool:
    """Whether an unregistered member sits elsewhere than the model (so it explains a forward that fails)."""
    return any(move_note([h.obj], index.home, failure) for h in index.hits)
