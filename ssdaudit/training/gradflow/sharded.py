"""Sharded parameters (FSDP2 ``fully_shard``, DTensor) for the gradient-flow monitor.

Under FSDP2 a registered parameter is a DTensor holding this rank's shard; forward all-gathers it into a plain
*unsharded* parameter, and that is the leaf autograd reaches. Two things follow:

* the graph's leaves must be mapped back to the sharded parameters they stand for (``unsharded_to_sharded``),
  or every FSDP parameter would look unreached (G002) and every gathered copy like an orphan (G001);
* statistics are computed on the local shards and combined across the ranks that hold the other shards
  (``ShardReducer``): L2 norms as sums of squares, L1 norms as sums, max |g| as a max. Mesh dimensions over which
  a tensor is replicated are not summed over. A tensor with any other placement (``Partial``) is gathered in full
  (``ShardReducer.view``), which is exact but costs a collective per tensor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def is_dtensor(t: Any) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return False
    return isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of ``t``: the local shard of a DTensor, ``t`` itself otherwise."""
    return t.to_local() if is_dtensor(t) else t  # type: ignore[attr-defined]


def unsharded_to_sharded(model: nn.Module) -> dict[int, torch.Tensor]:
    """id(unsharded parameter) -> its sharded (registered) parameter, for every module ``fully_shard`` manages.

    This reads FSDP2's per-module state (``_get_fsdp_state()``), which is not public API: it is looked up
    defensively, and an empty dict means "not FSDP2, or a version laid out differently" (then
    ``GradFlowMonitor`` falls back on which sharded parameters received a gradient)."""
    out: dict[int, torch.Tensor] = {}
    for module in model.modules():
        get_state = getattr(module, "_get_fsdp_state", None)
        if get_state is None:
            continue
        try:
            state = get_state()
            groups = getattr(state, "_fsdp_param_groups", None)
            if groups is None:  # torch <= 2.11: one group per module
                single = getattr(state, "_fsdp_param_group", None)
                groups = [single] if single is not None else []
            for group in groups:
                for fsdp_param in getattr(group, "fsdp_params", ()):
                    unsharded = getattr(fsdp_param, "_unsharded_param", None)
                    sharded = getattr(fsdp_param, "sharded_param", None)
                    if isinstance(unsharded, torch.Tensor) and isinstance(sharded, torch.Tensor):
                        out[id(unsharded)] = sharded
        except Exception:  # a layout this code does not know: use the fallback
            continue
    return out


class ShardReducer:
    """Combine per-column statistics of sharded tensors across ranks, one collective per field group and step.

    ``columns``: the tracked tensors, in column order. Columns of plain tensors are left as they are."""

    def __init__(self, columns: list[torch.Tensor]) -> None:
        self.by_groups: dict[tuple[Any, ...], list[int]] = {}  # process groups to sum over -> columns
        self.gather: set[int] = set()  # columns whose placement cannot be combined from norms
        for k, t in enumerate(columns):
            if not is_dtensor(t):
                continue
            groups = _shard_groups(t)
            if groups is None:
                self.gather.add(k)
            elif groups:
                self.by_groups.setdefault(tuple(groups), []).append(k)

    def view(self, column: int, t: torch.Tensor) -> torch.Tensor:
        """What to compute column ``column``'s statistics on: the local shard, or the full tensor when its
        placement cannot be combined (every rank must call this for the same columns: it may be a collective)."""
        if column in self.gather:
            return t.full_tensor()  # type: ignore[attr-defined,no-any-return]
        return local(t)

    def combine(self, row: torch.Tensor, sum_sq: tuple[int, ...], sums: tuple[int, ...], maxes: tuple[int, ...]) -> None:
        """In place on ``row`` (fields x columns): the fields in ``sum_sq`` are L2 norms (squared, summed,
        rooted), those in ``sums`` are summed, those in ``maxes`` take the max, over the ranks holding shards."""
        import torch.distributed as dist

        for groups, cols in self.by_groups.items():
            idx = torch.tensor(cols, device=row.device)
            adds = torch.cat([row[list(sum_sq)][:, idx] ** 2, row[list(sums)][:, idx]])
            top = row[list(maxes)][:, idx].clone()
            for group in groups:
                dist.all_reduce(adds, op=dist.ReduceOp.SUM, group=group)
                if maxes:
                    dist.all_reduce(top, op=dist.ReduceOp.MAX, group=group)
            n = len(sum_sq)
            for j, f in enumerate(sum_sq):
                row[f, idx] = adds[j].sqrt()
            for j, f in enumerate(sums):
                row[f, idx] = adds[n + j]
            for j, f in enumerate(maxes):
                row[f, idx] = top[j]


def _shard_groups(t: Any) -> list[Any] | None:
    """The process groups over which ``t`` is sharded (one per mesh dimension with a ``Shard`` placement), [] for
    a fully replicated tensor, None when a placement is neither (``Partial``: sum before any norm)."""
    from torch.distributed.tensor import Replicate, Shard

    groups = []
    for dim, placement in enumerate(t.placements):
        if isinstance(placement, Shard):
            groups.append(t.device_mesh.get_group(dim))
        elif not isinstance(placement, Replicate):
            return None
    return groups
