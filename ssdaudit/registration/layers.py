"""The familiar layer table (torchinfo's: depth, output shapes from the probe input, parameters), with what
torchinfo cannot see spliced in and marked: the modules and parameters the model keeps outside its registry.

torchinfo counts only registered modules, so for the seed's model its table silently shows 2.76M parameters;
here the unregistered backbone appears as rows of its own and the total is the model's real 4.58M.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ssdaudit.core.findings import rules_tagged
from ssdaudit.core.findings import Finding

HIDING_RULES = rules_tagged("hides-parameters")


@dataclass
class LayerRow:
    depth: int
    path: str  # qualified name ("" for the model itself)
    kind: str  # class name
    output_shape: list[int] | None  # from the probe pass (None where torchinfo did not see the module run)
    params: int
    unregistered: str | None = None  # the rule that hides it (R001...), None for registered layers

    def to_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "path": self.path, "kind": self.kind, "output_shape": self.output_shape,
                "params": self.params, "unregistered": self.unregistered}


def _path(info: Any) -> str:
    names = []
    while info is not None and info.depth > 0:
        names.append(str(info.var_name))
        info = info.parent_info
    return ".".join(reversed(names))


def _shape(size: Any) -> list[int] | None:
    return [int(d) for d in size] if isinstance(size, (list, tuple)) and size and all(isinstance(d, int) for d in size) else None


def layer_table(model: nn.Module, example_input: Any, depth: int, findings: list[Finding]) -> list[LayerRow]:
    """torchinfo's rows down to ``depth`` (root included), then the members that ``findings`` show outside the
    registry, marked with their rule: a row per hidden container and, within ``depth``, one per member."""
    import torchinfo

    from ssdaudit.core.forward_call import forward_arguments

    args, kwargs = forward_arguments(model, example_input)
    data: Any = kwargs if kwargs else list(args)  # torchinfo calls model(**dict) or model(*list)
    was_training = model.training
    try:
        stats = torchinfo.summary(model, input_data=data, depth=depth, verbose=0, mode="eval")
    finally:
        model.train(was_training)
    rows = [LayerRow(info.depth, _path(info), info.class_name, _shape(info.output_size), int(info.num_params))
            for info in stats.summary_list if info.depth <= depth]
    hidden: list[LayerRow] = []
    for f in findings:
        if f.rule not in HIDING_RULES or not f.members:
            continue
        hidden.append(LayerRow(1, f.path, f"({f.rule}: not registered)", None, f.params, f.rule))
        if depth >= 2:
            for name, obj in f.members.items():
                params = sum(p.numel() for p in obj.parameters()) if isinstance(obj, nn.Module) else int(obj.numel())
                hidden.append(LayerRow(2, name, type(obj).__name__, None, params, f.rule))
    if rows and hidden:
        rows[0].params += sum(r.params for r in hidden if r.depth == 1)  # the model's real total
    return rows[:1] + hidden + rows[1:]
