"""Fix builders several rules share: wrapping a plain container in the registering one its content and use call
for (R001, R002). Each returns a ``Fix`` of text edits, or None when no fix is certain enough to offer."""

from __future__ import annotations

import libcst as cst

from ssdaudit.core.findings import Edit, Fix
from ssdaudit.lint.context import FileContext, Hit, dotted, self_attr
from ssdaudit.lint.scan import ClassScan, ContainerHit, elements, kind_of

# The list/dict methods each registering container has, beside indexing, len() and iteration.
_METHODS = {
    "ModuleList": {"append", "extend", "insert", "pop"},
    "ParameterList": {"append", "extend"},
    "ModuleDict": {"keys", "items", "values", "pop", "update", "clear"},
    "ParameterDict": {"keys", "items", "values", "pop", "update", "clear", "get", "setdefault", "copy", "popitem"},
}
_LIST_CALLS = {"list", "tuple"}
_DICT_CALLS = {"dict", "OrderedDict"}


def _is_dict_like(ctx: FileContext, node: cst.CSTNode) -> bool:
    if isinstance(node, (cst.Dict, cst.DictComp)):
        return True
    return isinstance(node, cst.Call) and (dotted(node.func) or "").rpartition(".")[2] in _DICT_CALLS


def _is_list_like(node: cst.CSTNode) -> bool:
    if isinstance(node, (cst.List, cst.ListComp, cst.Tuple, cst.GeneratorExp, cst.BinaryOperation)):
        return True
    return isinstance(node, cst.Call) and (dotted(node.func) or "").rpartition(".")[2] in _LIST_CALLS


def _is_empty(node: cst.CSTNode) -> bool:
    if isinstance(node, (cst.List, cst.Dict, cst.Tuple)):
        return not node.elements
    return isinstance(node, cst.Call) and not node.args and (dotted(node.func) or "").rpartition(".")[2] in (
        _LIST_CALLS | _DICT_CALLS)


def _str_keys(node: cst.CSTNode) -> bool:
    """Keys a ModuleDict accepts for certain: string literals without a dot (f-strings and str() in comprehensions)."""
    if isinstance(node, cst.Dict):
        return all(isinstance(e, cst.DictElement) and isinstance(e.key, cst.SimpleString)
                   and "." not in e.key.evaluated_value for e in node.elements)
    if isinstance(node, cst.DictComp):
        return isinstance(node.key, (cst.FormattedString, cst.SimpleString)) or (
            isinstance(node.key, cst.Call) and dotted(node.key.func) == "str")
    return False


def wrap_container(ctx: FileContext, node: cst.CSTNode, kind: str, used: set[str]) -> tuple[list[Edit], bool, str] | None:
    """Edits that wrap the plain container ``node`` (and containers nested in a list of lists) in the registering
    container for ``kind`` ("module" / "parameter"): (edits, safe, the container's name)."""
    prefix = ctx.nn_prefix()
    if prefix is None:
        return None  # the file binds neither torch nor torch.nn: a wrapper could not be named
    if _is_dict_like(ctx, node):
        name = "ModuleDict" if kind == "module" else "ParameterDict"
        safe = _str_keys(node) or _is_empty(node)
    elif _is_list_like(node):
        name = "ModuleList" if kind == "module" else "ParameterList"
        safe = True
    else:
        return None  # a set, a deque: order or semantics a registering container does not keep
    safe = safe and used <= _METHODS[name]
    if _is_empty(node):
        return [ctx.replace(node, f"{prefix}{name}()")], safe, name
    if isinstance(node, cst.Tuple):
        # (a, b) -> nn.ModuleList([a, b]): a registering list takes one iterable, not the tuple's items (the range
        # of a parenthesised tuple lies inside its parentheses, which stay around the call)
        items = [e.value for e in node.elements]
        if any(isinstance(e, cst.StarredElement) or _is_list_like(v) or _is_dict_like(ctx, v)
               for e, v in zip(node.elements, items)):
            return None
        return [ctx.replace(node, f"{prefix}{name}([{', '.join(ctx.code(v) for v in items)}])")], safe, name
    edits = ctx.wrap(node, f"{prefix}{name}(")
    # lists of lists: each inner plain list of modules becomes a registering container too
    if isinstance(node, (cst.List, cst.Tuple, cst.ListComp, cst.Dict, cst.DictComp)):
        for inner in elements(ctx, node) or []:
            if (_is_list_like(inner) or _is_dict_like(ctx, inner)) and not isinstance(inner, cst.BinaryOperation) \
                    and kind_of(ctx, elements(ctx, inner) or [], {}) == kind:
                nested = wrap_container(ctx, inner, kind, set())
                if nested is None:
                    return None
                edits += nested[0]
                safe = safe and nested[1]
    return edits, safe, name


def _chained_loop(loop: cst.For) -> bool:
    """``for layer in ...: x = layer(x)``: each output fed to the next, nothing else in the body."""
    if not isinstance(loop.target, cst.Name) or loop.orelse is not None or not isinstance(loop.body, cst.IndentedBlock):
        return False
    if len(loop.body.body) != 1 or not isinstance(loop.body.body[0], cst.SimpleStatementLine):
        return False
    line = loop.body.body[0]
    if len(line.body) != 1 or not isinstance(line.body[0], cst.Assign) or len(line.body[0].targets) != 1:
        return False
    stmt = line.body[0]
    out, call = stmt.targets[0].target, stmt.value
    return (isinstance(out, cst.Name) and isinstance(call, cst.Call) and isinstance(call.func, cst.Name)
            and call.func.value == loop.target.value and len(call.args) == 1 and call.args[0].keyword is None
            and not call.args[0].star and isinstance(call.args[0].value, cst.Name) and call.args[0].value.value == out.value)


def runs_in_order(scan: ClassScan, attr: str) -> bool:
    """Whether every read of ``self.<attr>`` in the class is ``for layer in self.<attr>: x = layer(x)``: the
    container is a pipeline, which nn.Sequential states (and runs as ``self.<attr>(x)``)."""
    loops = reads = 0
    stores: set[int] = set()
    for nodes in scan.nodes.values():
        for n in nodes:
            if isinstance(n, (cst.Assign, cst.AnnAssign, cst.AugAssign)):
                targets = [t.target for t in n.targets] if isinstance(n, cst.Assign) else [n.target]
                stores.update(id(t) for t in targets)
            elif isinstance(n, cst.For) and self_attr(n.iter) == attr:
                if not _chained_loop(n):
                    return False
                loops += 1
    for nodes in scan.nodes.values():
        reads += sum(1 for n in nodes if isinstance(n, cst.Attribute) and self_attr(n) == attr and id(n) not in stores)
    return loops > 0 and reads == loops


def _sequential(ctx: FileContext, scan: ClassScan, hit: ContainerHit, values: list[cst.BaseExpression]) -> Fix | None:
    """nn.Sequential for a list of modules assigned once and only ever run in order, else None."""
    prefix = ctx.nn_prefix()
    if (prefix is None or hit.kind != "module" or len(values) != 1 or values[0] is not hit.node
            or scan.assigned.get(hit.attr, 0) != 1 or scan.used_methods.get(hit.attr)):
        return None
    node = values[0]
    if not isinstance(node, (cst.List, cst.Tuple, cst.ListComp, cst.GeneratorExp)) or _is_empty(node):
        return None
    if any(_is_list_like(e) or _is_dict_like(ctx, e) for e in elements(ctx, node) or []):
        return None  # a list of lists: the inner lists need containers of their own
    if not runs_in_order(scan, hit.attr):
        return None
    title = (f"wrap self.{hit.attr} in nn.Sequential (only ever run in order); state_dict() keys stay "
             f"{hit.attr}.0.weight ..., as with nn.ModuleList, so checkpoints load either way")
    if isinstance(node, cst.Tuple):  # (a, b) or a, b -> nn.Sequential(a, b)
        if any(isinstance(e, cst.StarredElement) for e in node.elements):
            return None
        edits = [ctx.replace(node, f"{prefix}Sequential({', '.join(ctx.code(e.value) for e in node.elements)})")]
    elif isinstance(node, cst.List) and not node.lpar:
        r = ctx.range(node)  # [a, b] -> nn.Sequential(a, b): the brackets become the call's parentheses
        edits = [Edit(r.start.line, r.start.column + 1, r.start.line, r.start.column + 2, f"{prefix}Sequential("),
                 Edit(r.end.line, r.end.column, r.end.line, r.end.column + 1, ")")]
    else:
        edits = ctx.wrap(node, f"{prefix}Sequential(*")
    return Fix(title, True, tuple(edits))


def container_fix(ctx: FileContext, scan: ClassScan, hit: ContainerHit) -> Fix | None:
    """R001/R002: wrap the attribute's plain container where it is assigned (also for one filled by ``append``)."""
    if isinstance(hit.node, cst.Assign):  # self.body = layers (a local plain container, or after `del self.body`)
        prefix = ctx.nn_prefix()
        if prefix is None:
            return None
        dict_like = scan.local_containers.get(hit.attr) == "dict"
        name = {("module", False): "ModuleList", ("module", True): "ModuleDict", ("parameter", False): "ParameterList",
                ("parameter", True): "ParameterDict"}[(hit.kind if hit.kind == "parameter" else "module", dict_like)]
        return Fix(f"wrap self.{hit.attr} in nn.{name}", True, tuple(ctx.wrap(hit.node.value, f"{prefix}{name}(")))
    values: list[cst.BaseExpression]
    if any(v is hit.node for v in scan.plain_values.get(hit.attr, ())):
        values = [v for v in scan.plain_values[hit.attr] if v is hit.node]
    else:  # .append(...) or self.x[k] = ...: wrap the container where it is assigned
        values = list(scan.plain_values.get(hit.attr, ()))
    if not values or not hit.kind:
        return None
    sequential = _sequential(ctx, scan, hit, values)
    if sequential is not None:
        return sequential
    edits: list[Edit] = []
    safe = True
    name = ""
    for node in values:
        wrapped = wrap_container(ctx, node, hit.kind, scan.used_methods.get(hit.attr, set()))
        if wrapped is None:
            return None
        edits += wrapped[0]
        safe = safe and wrapped[1]
        name = wrapped[2]
    return Fix(f"wrap self.{hit.attr} in nn.{name}", safe, tuple(edits))


def container_hit_fix(ctx: FileContext, hit: Hit) -> Fix | None:
    """The fix of a ``container_hits`` hit: wrap the container where it is assigned."""
    scan, h = hit.data
    assert isinstance(scan, ClassScan) and isinstance(h, ContainerHit)
    return container_fix(ctx, scan, h)
