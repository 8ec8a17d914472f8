"""R004: a tensor made in ``__init__`` or a helper method it calls (``torch.zeros(...)``, ``torch.arange(n).float() /
n``, ``torch.eye(n).t()``...) kept as a plain attribute that ``forward()`` reads (and does not rebuild itself, or
through a method it calls, as a cache does).
Fix: ``self.register_buffer(name, tensor, persistent=...)``: not persistent when the tensor is computed from
constants (state_dict() stays as it was: safe), persistent otherwise (state_dict() gains a key that checkpoints
saved before lack: unsafe)."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import Fix
from ssdaudit.lint.context import FileContext, Hit, dotted, self_attr, walk
from ssdaudit.lint.scan import ClassScan, class_scans

CODE = "R004"


def check(ctx: FileContext) -> Iterator[Hit]:
    for scan in class_scans(ctx):
        reads = scan.forward_reads() - scan.forward_stores()  # a cache forward() rebuilds is its own business
        for attr, (value, stmt, method) in scan.tensors.items():
            if attr in reads and not _scalar(ctx, value):
                where = "" if method == "__init__" else f" (made in self.{method}(), which __init__ calls)"
                yield Hit(value, f"{scan.cls.name.value}.{attr}",
                          f"self.{attr} is a plain tensor read in forward(){where}: not moved by .to(), not saved",
                          data=(scan, attr, stmt, method))


# torch factories whose values differ from one build to the next: not constants, so a buffer of them must be saved
# (persistent), or a reloaded model computes with other values
_RANDOM = {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "normal", "bernoulli",
           "multinomial", "poisson", "empty", "empty_like", "empty_strided"}


def _scalar(ctx: FileContext, node: cst.CSTNode) -> bool:
    """``torch.tensor(1e-5)`` (a number, keywords allowed): a 0-dim tensor mixes with tensors on any device and does
    not decide their dtype, so forward uses it safely (``ssdaudit params`` calls it N005, a note)."""
    if not isinstance(node, cst.Call) or (dotted(node.func) or "").rpartition(".")[2] not in ("tensor", "scalar_tensor"):
        return False
    if (dotted(node.func) or "").split(".")[0] not in ctx.torch_aliases:
        return False
    positional = [a for a in node.args if a.keyword is None]
    if len(positional) != 1:
        return False
    value = positional[0].value
    if isinstance(value, cst.UnaryOperation):
        value = value.expression
    return isinstance(value, (cst.Integer, cst.Float)) or (isinstance(value, cst.Name) and value.value in ("True", "False"))


def _constant(ctx: FileContext, node: cst.CSTNode) -> bool:
    """Built from literals and torch's own deterministic names only (``torch.arange(10, dtype=torch.float32)``;
    not ``torch.randn(8)``, nor ``torch.empty(8)``, whose values are not reproduced by a rebuild)."""
    for n in walk(node):
        if isinstance(n, cst.Call) and (dotted(n.func) or "").rpartition(".")[2] in _RANDOM | {
                "normal_", "uniform_", "random_", "bernoulli_", "exponential_", "geometric_", "cauchy_",
                "log_normal_"}:
            return False
    allowed: set[int] = set()
    for n in walk(node):
        if isinstance(n, cst.Attribute) and (dotted(n) or "").split(".")[0] in ctx.torch_aliases:
            allowed.update(id(m) for m in walk(n))
        elif isinstance(n, cst.Attribute):
            allowed.add(id(n.attr))  # a method's name (``.float()``), not a value read
        elif isinstance(n, cst.Arg) and n.keyword is not None:
            allowed.add(id(n.keyword))
    return all(id(n) in allowed or n.value in ("True", "False", "None") for n in walk(node) if isinstance(n, cst.Name))


def fix(ctx: FileContext, hit: Hit) -> Fix | None:
    scan, attr, stmt, method = hit.data
    assert isinstance(scan, ClassScan) and isinstance(attr, str) and isinstance(stmt, (cst.Assign, cst.AnnAssign))
    if isinstance(stmt, cst.Assign) and len(stmt.targets) != 1:
        return None
    init = scan.methods.get("__init__")
    order = list(walk(init)) if init is not None else []
    supers = [i for i, n in enumerate(order)
              if isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute) and n.func.attr.value == "__init__"]
    if method == "__init__":
        at = next((i for i, n in enumerate(order) if n is stmt), -1)
    else:  # a helper: register_buffer needs every call of it from __init__ after nn.Module.__init__
        calls = [i for i, n in enumerate(order) if isinstance(n, cst.Call) and self_attr(n.func) == method]
        at = min(calls) if calls else -1
    if not supers or min(supers) > at:
        return None  # register_buffer needs nn.Module.__init__ to have run
    value = hit.node
    constant = _constant(ctx, value)
    text = f'self.register_buffer("{attr}", {ctx.code(value)}, persistent={not constant})'
    title = (f"register self.{attr} as a buffer, persistent=False: computed from constants, state_dict() unchanged"
             if constant else f"register self.{attr} as a persistent buffer: state_dict() gains '{attr}', so "
             "checkpoints saved before need strict=False")
    return Fix(title, constant and scan.assigned.get(attr, 0) == 1, (ctx.replace(stmt, text),))
