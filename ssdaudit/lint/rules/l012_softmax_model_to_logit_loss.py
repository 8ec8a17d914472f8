"""L012: the output of a model whose ``forward()`` returns a softmax (``F.softmax``, ``torch.softmax``,
``x.softmax()``, ``self.softmax(x)`` with ``nn.Softmax`` built in ``__init__``) given to ``CrossEntropyLoss`` /
``F.cross_entropy`` in the same file: the Keras habit of a softmax last layer.

The model class is read from the file (every ``return`` of its forward must be a softmax, or a name last assigned
one: a forward that returns logits in training and probabilities only in eval is left alone); its instances are the
names assigned from its constructor anywhere in the file (``model = Net().to(device)``), and the loss's first
argument must be a call of one of them, directly or through a local name. Probabilities used with ``NLLLoss`` after
a log, or only at inference, are left alone (no cross_entropy sees them)."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import RULES
from ssdaudit.lint.context import FileContext, Hit, dotted, statements, walk
from ssdaudit.lint.loops import callee, own_nodes, reaching_values, scopes

CODE = "L012"
TRIGGERS = ("softmax", "Softmax")
_WRAPPERS = {"to", "cuda", "cpu", "float", "double", "half", "train", "eval", "DataParallel",
             "DistributedDataParallel", "DDP", "compile"}


def _softmax_sequential(node: cst.CSTNode | None) -> bool:
    """``nn.Sequential(..., nn.Softmax(dim=1))``: a stack whose last layer is a softmax."""
    if not (isinstance(node, cst.Call) and callee(node) == "Sequential"):
        return False
    layers = [a.value for a in node.args if a.keyword is None]
    return bool(layers) and isinstance(layers[-1], cst.Call) and callee(layers[-1]) == "Softmax"


def _is_softmax(node: cst.CSTNode | None, softmax_attrs: set[str]) -> bool:
    if not isinstance(node, cst.Call):
        return False
    func = node.func.func if isinstance(node.func, cst.Call) else node.func  # nn.Softmax(dim=1)(x)
    name = func.attr.value if isinstance(func, cst.Attribute) else (dotted(func) or "")
    if name in ("softmax", "Softmax"):
        return True
    return isinstance(node.func, cst.Attribute) and dotted(node.func) in softmax_attrs


def _softmax_classes(ctx: FileContext) -> set[str]:
    """Module classes of the file whose forward() returns a softmax on every return."""
    out = set()
    for cls in ctx.module_class_defs():
        body = cls.body.body if isinstance(cls.body, cst.IndentedBlock) else []
        softmax_attrs = {name for n in walk(cls) if isinstance(n, cst.Assign) and isinstance(n.value, cst.Call)
                         and (callee(n.value) == "Softmax" or _softmax_sequential(n.value))
                         for t in n.targets if (name := dotted(t.target))}
        forward = next((f for f in body if isinstance(f, cst.FunctionDef) and f.name.value == "forward"), None)
        if forward is None:
            continue
        returns = [n for n in own_nodes(forward.body) if isinstance(n, cst.Return)]
        if not returns or any(r.value is None for r in returns):
            continue
        assigned: dict[str, list[cst.BaseExpression]] = {}
        for n in own_nodes(forward.body):
            if isinstance(n, cst.Assign):
                for t in n.targets:
                    if isinstance(t.target, cst.Name):
                        assigned.setdefault(t.target.value, []).append(n.value)

        def returns_softmax(r: cst.Return) -> bool:
            value = r.value
            if _is_softmax(value, softmax_attrs):
                return True
            if isinstance(value, cst.Name):
                defs = reaching_values(forward, r)
                values = (defs or {}).get(value.value) or assigned.get(value.value, [])[-1:]
                return bool(values) and all(_is_softmax(v, softmax_attrs) for v in values)
            return False

        if all(returns_softmax(r) for r in returns):
            out.add(cls.name.value)
    return out


def _constructed(node: cst.BaseExpression, classes: dict[str, str]) -> str | None:
    """The class of ``Net(...)``, ``Net(...).to(device)``, ``DDP(Net(...))``, ``build()`` (a function of the file
    that returns one), ``nn.Sequential(..., nn.Softmax())``, else None. ``classes``: callable name -> class."""
    if _softmax_sequential(node):
        return "nn.Sequential"
    while isinstance(node, cst.Call):
        name = node.func.attr.value if isinstance(node.func, cst.Attribute) else callee(node)
        if name in classes:
            return classes[name]
        if isinstance(node.func, cst.Attribute) and name in _WRAPPERS:
            node = node.func.value
        elif name in _WRAPPERS and node.args:
            node = node.args[0].value
        else:
            return None
    return None


def _is_ce(call: cst.Call, losses: set[str]) -> bool:
    return callee(call) == "cross_entropy" or dotted(call.func) in losses or (
        isinstance(call.func, cst.Call) and callee(call.func) == "CrossEntropyLoss")


def check(ctx: FileContext) -> Iterator[Hit]:
    if not any(w in ctx.source for w in ("cross_entropy", "CrossEntropyLoss")):
        return
    classes = {name: name for name in _softmax_classes(ctx)}
    if not classes and "Softmax" not in ctx.source:
        return
    for n in statements(ctx.module):  # factories: def build_model(): return Net(...)
        if isinstance(n, cst.FunctionDef):
            returned = [r.value for r in own_nodes(n.body) if isinstance(r, cst.Return) and r.value is not None]
            made = {_constructed(v, classes) for v in returned}
            if len(made) == 1 and None not in made:
                classes[n.name.value] = made.pop() or ""
    instances: dict[str, str] = {}
    for n in statements(ctx.module):
        if isinstance(n, cst.Assign):
            cls = _constructed(n.value, classes)
            if cls is not None:
                for t in n.targets:
                    name = dotted(t.target)
                    if name:
                        instances[name] = cls
    if not instances:
        return
    losses = {name for n in statements(ctx.module) if isinstance(n, cst.Assign) and isinstance(n.value, cst.Call)
              and callee(n.value) == "CrossEntropyLoss" for t in n.targets if (name := dotted(t.target))}

    def model_call(node: cst.CSTNode) -> str | None:
        if isinstance(node, cst.Call) and dotted(node.func) in instances:
            return dotted(node.func)
        return None

    for scope in scopes(ctx):
        for call in scope.calls():
            if not (_is_ce(call, losses) and call.args and call.args[0].keyword is None):
                continue
            arg = call.args[0].value
            name = model_call(arg)
            if name is None and isinstance(arg, cst.Name):
                defs = reaching_values(scope.node, call) or {}
                name = next((found for v in defs.get(arg.value, []) if (found := model_call(v))), None)
            if name is not None:
                yield Hit(call, name, RULES[CODE].message.format(name=name, cls=instances[name]))
