"""Fix builders several rules share: wrapping a plain container in the registering one its content and use call
for (R001, R002). Each returns a ``Fix`` of text edits, or None when no fix is certain enough to offer."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import Edit, Fix
from ssdaudit.lint.context import FileContext, Hit, dotted
from ssdaudit.lint.scan import ClassScan, ContainerHit, class_scans, elements, kind_of

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


def container_fix(ctx: FileContext, scan: ClassScan, hit: ContainerHit) -> Fix | None:
    """R001/R002: wrap the attribute's plain container where it is assigned (also for one filled by ``append``)."""
    if isinstance(hit.node, cst.Assign):  # self.body = layers, after `del self.body`: the modules, unpacked
        prefix = ctx.nn_prefix()
        if prefix is None:
            return None
        return Fix(f"wrap self.{hit.attr} in nn.ModuleList", True,
                   tuple(ctx.wrap(hit.node.value, f"{prefix}ModuleList(")))
    values: list[cst.BaseExpression]
    if any(v is hit.node for v in scan.plain_values.get(hit.attr, ())):
        values = [v for v in scan.plain_values[hit.attr] if v is hit.node]
    else:  # .append(...) or self.x[k] = ...: wrap the container where it is assigned
        values = list(scan.plain_values.get(hit.attr, ()))
    if not values or not hit.kind:
        return None
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


def container_hits(ctx: FileContext, code: str) -> Iterator[Hit]:
    """The check of a plain-container rule (R001 modules, R002 parameters): the class scans' unregistered
    containers of that rule, each with what its fix needs."""
    for scan in class_scans(ctx):
        for h in scan.unregistered(code):
            yield Hit(h.node, h.symbol, h.message, data=(scan, h))


def container_hit_fix(ctx: FileContext, hit: Hit) -> Fix | None:
    """The fix of a ``container_hits`` hit: wrap the container where it is assigned."""
    scan, h = hit.data
    assert isinstance(scan, ClassScan) and isinstance(h, ContainerHit)
    return container_fix(ctx, scan, h)
