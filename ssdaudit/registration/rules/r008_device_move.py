"""R008: tensors forward reads that existed before it and that ``.to()`` would leave behind."""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ssdaudit.core.findings import RULES, Finding, Severity
from ssdaudit.registration.evidence import ParamsEvidence
from ssdaudit.registration.rules import Phase
from ssdaudit.registration.walk import MOVE_FUNCTIONS

CODE = "R008"
PHASE = Phase.PROBE
ORDER = 50



def moved_by_to(model: nn.Module) -> set[int]:
    """Ids of the tensors ``model.to(...)`` converts: ``_apply`` with a function that records its argument and
    returns it unchanged, so the model's own ``_apply`` overrides decide, exactly as for a real move."""
    seen: dict[int, torch.Tensor] = {}

    def record(t: torch.Tensor) -> torch.Tensor:
        seen[id(t)] = t
        return t

    model._apply(record)  # type: ignore[no-untyped-call]
    return set(seen)



def check(evidence: ParamsEvidence, earlier: Sequence[Finding]) -> Iterator[Finding]:
    """Tensors forward read that existed before it and that ``.to()`` would not move, minus those an earlier
    finding already names (its members) and those forward moves itself before use. Where a module overrides
    ``_apply``, what it keeps can only be seen by really moving: the dtype-move probe (``evidence.moves``)
    decides there."""
    index, probe, moves = evidence.index, evidence.trace, evidence.moves
    if probe is None:
        return
    model, names, module_names = index.model, index.tensor_names, index.member_module_names
    if index.custom_apply and moves is not None:
        left_behind = {s.name for s in moves.strays if s.name}
        moved = {i for i in probe.preexisting if i in names and names[i] not in left_behind}
    else:
        try:
            moved = moved_by_to(model)
        except Exception:  # an _apply that cannot take an identity function: no verdict
            return
    covered = [f.path for f in earlier if f.members]
    groups: dict[str, list[tuple[str | None, torch.Tensor, str]]] = collections.defaultdict(list)
    for i, (tensor, module) in probe.preexisting.items():
        if i in moved or probe.first_use.get(i) in MOVE_FUNCTIONS:
            continue
        name = names.get(i)
        if name is not None and any(name == p or name.startswith(p + ".") for p in covered):
            continue
        reader = module_names.get(id(module), type(module).__name__)
        key = name.rsplit(".", 1)[0] if name and "." in name else (name or f"<{reader or 'model'}>")
        groups[key].append((name, tensor, reader))
    for path, items in groups.items():
        values = sum(t.numel() for _, t, _ in items)
        listing = ", ".join(f"{n or 'a tensor'} {tuple(t.shape)}" for n, t, _ in items[:3]) + (", ..." if len(items) > 3 else "")
        if all(n for n, _, _ in items):
            yield RULES["R008"].finding(path,
                f"{len(items)} tensor(s) ({values:,} values) that forward reads are not moved by .to() / .cuda() / "
                f".half() (a move to float64 left them as they were; on a GPU they would stay on the CPU): {listing}",
            )
        else:  # a global, a closure, or a cache made by an earlier call: often keyed by device and dtype, so a note
            yield RULES["R008"].finding(
                path,
                f"{len(items)} tensor(s) ({values:,} values) read by `{items[0][2] or 'the model'}`'s forward are "
                "reachable from no attribute, so .to() cannot move them (a global or closure: a bug on a GPU; a cache "
                f"keyed by device and dtype: fine): {listing}",
                severity=Severity.INFO,
            )

