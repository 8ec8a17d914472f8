"""T009: the input of a loss that applies its own (log-)softmax or sigmoid was already squashed.

Read from the input's autograd graph: the op that produced it, looking through shape-only ops (view, permute,
dtype casts under autocast). Free: no host sync.
"""

from __future__ import annotations

from typing import Any

import torch

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context

SHAPE_OPS = ("View", "Reshape", "UnsafeView", "Permute", "Transpose", "Squeeze", "Unsqueeze", "Clone", "Expand",
             "Slice", "Select", "ToCopy", "TBackward", "AliasBackward")
# loss -> the producing ops that mean "already probabilities" for it
SQUASHED = {
    "cross_entropy": ("SoftmaxBackward", "LogSoftmaxBackward"),
    "nll_loss": ("SoftmaxBackward",),  # nll_loss expects log-probabilities: log_softmax is right, softmax is not
    "binary_cross_entropy_with_logits": ("SigmoidBackward",),
}


def producer(t: torch.Tensor, depth: int = 8) -> str:
    """The name of the autograd node that made ``t``, looking through shape-only ops ("" without a graph)."""
    fn = t.grad_fn
    for _ in range(depth):
        if fn is None:
            return ""
        name = type(fn).__name__
        if not name.startswith(SHAPE_OPS) or not fn.next_functions:
            return name
        fn = fn.next_functions[0][0]
    return ""


class ProbabilitiesToLogitLoss(Check):
    code = "T009"

    def on_loss(self, ctx: Context, name: str, input: torch.Tensor, target: torch.Tensor, options: dict[str, Any]) -> None:
        squashed = SQUASHED.get(name)
        if not squashed:
            return
        made_by = producer(input)
        if made_by.startswith(squashed):
            op = made_by.removesuffix("0").removesuffix("Backward").lower()
            ctx.report(self.code, f"F.{name} got the output of {op} (shape {tuple(input.shape)}): it expects logits "
                       f"and applies its own {'sigmoid' if 'binary' in name else 'log-softmax'}", subject=f"loss {name}")
