"""One pass over an nn.Module class that the registration rules share (R001-R004, R009): which attributes hold
plain containers and what goes into them, tensors made in ``__init__``, what the class registers later.

The rules decide and phrase their findings (``lint/rules/r001_*.py`` ...); this module only records facts, in
source order (``order`` numbers the nodes it saw, so "registered on a later line" needs no positions).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import libcst as cst

from ssdaudit.lint.context import (CONTAINER_CALLS, MOVE_METHODS, PLAIN_OBJECT_CALLS, REGISTERING_CALLS, FileContext,
                                   dotted, is_self, self_attr, walk)


# The patterns ``ContainerHit.pattern`` records, and the facts each carries in ``detail``:
# "literal"   self.x = [M(), ...] (a plain list, tuple, dict or comprehension): container ("list", "dict", ...)
# "store"     self.x[k] = M() into an attribute that holds a plain container
# "add"       self.x.append/extend/insert/add/appendleft(M()) on such an attribute: method
# "local"     self.x = name, a local plain container filled with modules or parameters: name, container
# "unpacked"  self.x = list(self.y) after ``del self.y`` (a registry unpacked into a plain list): source
# "object"    self.x = SimpleNamespace(a=M()) / partial(...) / a namedtuple: a module in a plain object: call
# "operated"  self.w = nn.Parameter(t).to(device) (or .t(), [0], * 2): a Parameter operated on: op, moved
CONTAINER_PATTERNS = frozenset({"literal", "store", "add", "local", "unpacked"})


@dataclass
class ContainerHit:
    """A fact about one attribute: a module or parameter put into a plain container (or a plain object), or a
    Parameter operated on after wrapping. The node to report, the attribute, what went in (``kind``: "module",
    "parameter" or ""), the ``pattern`` (see ``CONTAINER_PATTERNS`` and the list above) and its ``detail``."""

    node: cst.CSTNode
    symbol: str
    attr: str
    order: int
    kind: str = ""  # "module" | "parameter"
    pattern: str = ""
    detail: dict[str, object] = field(default_factory=dict)


@dataclass
class ClassScan:
    cls: cst.ClassDef
    methods: dict[str, cst.FunctionDef]
    plain: dict[str, str] = field(default_factory=dict)  # attribute -> "module" | "parameter" | ""
    plain_values: dict[str, list[cst.BaseExpression]] = field(default_factory=lambda: defaultdict(list))
    # attr -> (value, assignment, method): tensors made in __init__ or a helper method __init__ calls
    tensors: dict[str, tuple[cst.BaseExpression, cst.CSTNode, str]] = field(default_factory=dict)
    assigned: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # attr -> how many self.attr = ...
    used_methods: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # attr -> self.attr.<method>
    hits: list[ContainerHit] = field(default_factory=list)
    registered_later: dict[str, list[int | None]] = field(default_factory=dict)
    nodes: dict[str, list[cst.CSTNode]] = field(default_factory=dict)  # each method's nodes, in source order
    # attr -> "list" | "dict": self.attr = name, where name is a local plain container filled with modules/parameters
    local_containers: dict[str, str] = field(default_factory=dict)

    def unregistered(self, patterns: frozenset[str], kind: str | None = None) -> list[ContainerHit]:
        """The hits of these ``patterns`` (and ``kind``, unless None) whose container the class does not register
        after all, in source order."""
        return [h for h in self.hits if h.pattern in patterns and (kind is None or h.kind == kind)
                and not any(o is None or o > h.order for o in self.registered_later.get(h.attr, ()))]

    def reachable(self, start: str) -> list[str]:
        """``start`` and the methods of the class it calls as ``self.name(...)``, transitively, in discovery order."""
        out = [start] if start in self.methods else []
        for name in out:
            for n in self.nodes.get(name, ()):
                if isinstance(n, cst.Call) and (m := self_attr(n.func)) is not None and m in self.methods and m not in out:
                    out.append(m)
        return out

    def forward_stores(self) -> set[str]:
        """Attributes forward() assigns, itself or through the methods it calls (a cache it rebuilds, on the input's
        device)."""
        return {a for name in self.reachable("forward") for n in self.nodes.get(name, ())
                if isinstance(n, (cst.Assign, cst.AnnAssign))
                for t in (n.targets if isinstance(n, cst.Assign) else [n]) if (a := self_attr(t.target)) is not None}

    def forward_reads(self) -> set[str]:
        nodes = self.nodes.get("forward", ())
        stores = {id(t.target) for n in nodes if isinstance(n, cst.Assign) for t in n.targets}
        return {n.attr.value for n in nodes if isinstance(n, cst.Attribute) and is_self(n.value) and id(n) not in stores}


def class_scans(ctx: FileContext) -> list[ClassScan]:
    """The scans of the file's nn.Module classes, computed once per file."""
    cached = ctx.cache.get("scans")
    if cached is None:
        cached = [_Scanner(ctx, cls).run() for cls in ctx.module_class_defs()]
        ctx.cache["scans"] = cached
    assert isinstance(cached, list)
    return cached


def elements(ctx: FileContext, node: cst.CSTNode) -> list[cst.BaseExpression] | None:
    """The element expressions of a plain container expression, or None when ``node`` is not one."""
    if isinstance(node, (cst.List, cst.Tuple, cst.Set)):
        return [e.value for e in node.elements]
    if isinstance(node, cst.Dict):
        return [e.value for e in node.elements]
    if isinstance(node, (cst.ListComp, cst.SetComp, cst.GeneratorExp)):
        return [node.elt]
    if isinstance(node, cst.DictComp):
        return [node.value]
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, (cst.Add, cst.Multiply)):
        left, right = elements(ctx, node.left), elements(ctx, node.right)
        if left is None and right is None:
            return None
        return (left or []) + (right or [])
    if isinstance(node, cst.Call):
        name = (dotted(node.func) or "").rpartition(".")[2]
        if name in CONTAINER_CALLS and not ctx.nn_member(node.func):
            out: list[cst.BaseExpression] = []
            for a in node.args:
                inner = elements(ctx, a.value) if a.keyword is None else None
                out += inner if inner is not None else [a.value]
            return out
    return None


def kind_of(ctx: FileContext, items: list[cst.BaseExpression], bound: dict[str, str]) -> str | None:
    """'module' or 'parameter' when any element constructs one (directly or through a bound local name)."""
    for e in items:
        inner = elements(ctx, e) if not ctx.is_module_ctor(e) else None
        if inner is not None:
            k = kind_of(ctx, inner, bound)
            if k:
                return k
        if ctx.is_module_ctor(e):
            return "module"
        if ctx.is_parameter_ctor(e):
            return "parameter"
        if isinstance(e, cst.Name) and e.value in bound:
            return bound[e.value]
    return None


def container_name(node: cst.CSTNode) -> str:
    if isinstance(node, (cst.List, cst.ListComp)):
        return "list"
    if isinstance(node, (cst.Dict, cst.DictComp)):
        return "dict"
    if isinstance(node, (cst.Set, cst.SetComp)):
        return "set"
    if isinstance(node, cst.Tuple):
        return "tuple"
    if isinstance(node, cst.Call):
        return f"{(dotted(node.func) or 'container').rpartition('.')[2]}(...)"
    return "container"


def operated_parameter(ctx: FileContext, node: cst.CSTNode) -> tuple[str, bool] | None:
    """A tensor operation applied to a freshly wrapped ``nn.Parameter(...)``: (how it reads: ``.t()``, ``[...]``,
    `` * ...``; whether it is a device/dtype move, which returns the Parameter itself when nothing moves), or None.
    In-place methods (``.uniform_()``) return the Parameter itself and are left out."""
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and ctx.is_parameter_ctor(node.func.value):
        method = node.func.attr.value
        if method.endswith("_"):
            return None
        return f".{method}(...)", method in MOVE_METHODS
    if isinstance(node, cst.Subscript) and ctx.is_parameter_ctor(node.value):
        return "[...]", False
    if isinstance(node, cst.BinaryOperation) and (ctx.is_parameter_ctor(node.left) or ctx.is_parameter_ctor(node.right)):
        op = ctx.module.code_for_node(node.operator).strip()
        return f" {op} ...", False
    if isinstance(node, cst.UnaryOperation) and ctx.is_parameter_ctor(node.expression):
        return " (negated)", False
    return None


def registers(call: cst.Call) -> bool:
    """self.add_module(...), self.register_module/parameter/buffer(...), setattr(self, ...)."""
    f = call.func
    if isinstance(f, cst.Attribute) and f.attr.value in REGISTERING_CALLS and is_self(f.value):
        return True
    return isinstance(f, cst.Name) and f.value == "setattr" and bool(call.args) and is_self(call.args[0].value)


def _unpacked_attr(node: cst.CSTNode) -> str | None:
    """'backbone' for list(self.backbone), tuple(self.backbone), [m for m in self.backbone] (also .children())."""
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Name) and node.func.value in ("list", "tuple") and node.args:
        node = node.args[0].value
    elif isinstance(node, (cst.ListComp, cst.GeneratorExp)):
        node = node.for_in.iter
    else:
        return None
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value in ("children", "modules"):
        node = node.func.value
    return self_attr(node)


class _Scanner:
    def __init__(self, ctx: FileContext, cls: cst.ClassDef) -> None:
        self.ctx, self.cls = ctx, cls
        self.locals: dict[str, tuple[str, str]] = {}  # the current method's local plain containers (see run)
        body = cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ()
        methods = {s.name.value: s for s in body if isinstance(s, cst.FunctionDef)}
        self.scan = ClassScan(cls, methods)
        self.nodes = {name: list(walk(fn)) for name, fn in methods.items()}  # each method's nodes, in source order
        self.scan.nodes = self.nodes
        self.init_methods: set[str] = set()
        # source order of every node of the methods: "registered on a later line" without positions
        self.index = {id(n): i for i, n in enumerate(n for nodes in self.nodes.values() for n in nodes)}

    def run(self) -> ClassScan:
        scan = self.scan
        self.init_methods = set(scan.reachable("__init__"))
        for fname, fn in scan.methods.items():
            bound: dict[str, str] = {}
            nodes = self.nodes[fname]
            self.locals = self._local_containers(nodes)
            for node in nodes:
                if isinstance(node, cst.Assign):
                    kind = ("module" if self.ctx.is_module_ctor(node.value)
                            else "parameter" if self.ctx.is_parameter_ctor(node.value) else None)
                    for t in node.targets:
                        if isinstance(t.target, cst.Name) and kind:
                            bound[t.target.value] = kind
                        self._assignment(fname, t.target, node.value, node, bound)
                elif isinstance(node, cst.AnnAssign) and node.value is not None:
                    self._assignment(fname, node.target, node.value, node, bound)
                elif isinstance(node, cst.Attribute) and isinstance(node.value, cst.Attribute):
                    attr = self_attr(node.value)
                    if attr is not None:
                        scan.used_methods[attr].add(node.attr.value)
            for node in nodes:
                if isinstance(node, cst.Call):
                    self._append(node, bound)
            self._unpacked_registry(nodes)
        scan.registered_later = self._registered_later()
        return scan

    def _hit(self, pattern: str, node: cst.CSTNode, attr: str, kind: str = "", **detail: object) -> None:
        self.scan.hits.append(ContainerHit(node, f"{self.cls.name.value}.{attr}", attr, self.index.get(id(node), 0), kind,
                                           pattern, detail))

    def _assignment(self, fname: str, target: cst.CSTNode, value: cst.BaseExpression, stmt: cst.CSTNode,
                    bound: dict[str, str]) -> None:
        scan, ctx = self.scan, self.ctx
        if isinstance(target, cst.Subscript):
            attr = self_attr(target.value)
            kind = kind_of(ctx, [value], bound)
            if attr is not None and attr in scan.plain and kind:
                self._hit("store", target, attr, kind)
            return
        attr = self_attr(target)
        if attr is None:
            return
        scan.assigned[attr] += 1
        items = elements(ctx, value)
        if items is not None:
            kind = kind_of(ctx, items, bound)
            scan.plain[attr] = kind or ""
            scan.plain_values[attr].append(value)
            if kind:
                self._hit("literal", value, attr, kind, container=container_name(value))
            return
        if isinstance(value, cst.Name) and value.value in self.locals:
            container, kind = self.locals[value.value]
            scan.plain[attr] = kind
            scan.local_containers[attr] = container
            self._hit("local", stmt, attr, kind, name=value.value, container=container)
            return
        operated = operated_parameter(ctx, value)
        if operated is not None:
            op, moved = operated
            self._hit("operated", value, attr, op=op, moved=moved)
            return
        if isinstance(value, cst.Call) and not ctx.is_module_ctor(value):
            name = (dotted(value.func) or "").rpartition(".")[2]
            if name in PLAIN_OBJECT_CALLS and any(ctx.is_module_ctor(a.value) for a in value.args):
                self._hit("object", value, attr, "module", call=name)
                return
        if fname in self.init_methods and ctx.is_tensor_expr(value):
            scan.tensors[attr] = (value, stmt, fname)

    def _local_containers(self, nodes: list[cst.CSTNode]) -> dict[str, tuple[str, str]]:
        """Local names bound to a plain list or dict literal in one method, with the kind ("module" / "parameter")
        of what they hold: from the literal, ``name.append/extend/insert(...)`` or ``name[key] = ...``. A name also
        handed to a registering container (``nn.ModuleList(layers)``, ``nn.Sequential(*layers)``) or rebound to
        something else is left out."""
        ctx = self.ctx
        containers: dict[str, str] = {}
        kinds: dict[str, str] = {}
        bound: dict[str, str] = {}
        registered: set[str] = set()
        for node in nodes:
            if isinstance(node, cst.Assign):
                for t in node.targets:
                    target = t.target
                    if isinstance(target, cst.Name):
                        name = target.value
                        if ctx.is_module_ctor(node.value) or ctx.is_parameter_ctor(node.value):
                            bound[name] = "module" if ctx.is_module_ctor(node.value) else "parameter"
                        if isinstance(node.value, (cst.List, cst.Dict, cst.ListComp, cst.DictComp)):
                            containers[name] = container_name(node.value)
                            kind = kind_of(ctx, elements(ctx, node.value) or [], bound)
                            if kind:
                                kinds[name] = kind
                        else:
                            containers.pop(name, None)
                            kinds.pop(name, None)
                    elif isinstance(target, cst.Subscript) and isinstance(target.value, cst.Name) \
                            and target.value.value in containers:
                        kind = kind_of(ctx, [node.value], bound)
                        if kind:
                            kinds[target.value.value] = kind
            elif isinstance(node, cst.Call):
                func = node.func
                if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) \
                        and func.value.value in containers and func.attr.value in ("append", "extend", "insert"):
                    args = node.args[1:] if func.attr.value == "insert" else node.args
                    items: list[cst.BaseExpression] = []
                    for a in args:
                        inner = elements(ctx, a.value) if func.attr.value == "extend" else None
                        items += inner if inner is not None else [a.value]
                    kind = kind_of(ctx, items, bound)
                    if kind:
                        kinds[func.value.value] = kind
                elif ctx.is_module_ctor(node) or ctx.is_parameter_ctor(node) or registers(node):
                    registered.update(a.value.value for a in node.args if isinstance(a.value, cst.Name))
        return {n: (containers[n], k) for n, k in kinds.items() if n in containers and n not in registered}

    def _append(self, call: cst.Call, bound: dict[str, str]) -> None:
        func = call.func
        if not (isinstance(func, cst.Attribute) and func.attr.value in ("append", "extend", "insert", "add", "appendleft")):
            return
        attr = self_attr(func.value)
        if attr is None or attr not in self.scan.plain:
            return
        method = func.attr.value
        args = list(call.args[1:] if method == "insert" else call.args)
        items: list[cst.BaseExpression] = []
        for a in args:
            inner = elements(self.ctx, a.value) if method == "extend" else None
            items += inner if inner is not None else [a.value]
        kind = kind_of(self.ctx, items, bound)
        if kind:
            self._hit("add", call, attr, kind, method=method)

    def _registered_later(self) -> dict[str, list[int | None]]:
        out: dict[str, list[int | None]] = {}
        for nodes in self.nodes.values():
            for node in nodes:
                if isinstance(node, cst.Assign) and self.ctx.is_registering_container(node.value):
                    used = {a for n in walk(node.value) if (a := self_attr(n)) is not None}
                    for t in node.targets:
                        attr = self_attr(t.target)
                        if attr is not None:
                            out.setdefault(attr, []).append(None if attr in used else self.index[id(node)])
                elif isinstance(node, cst.For):
                    calls = [c for c in walk(node) if isinstance(c, cst.Call)]
                    if any(registers(c) for c in calls):
                        iterated = {a for n in walk(node.iter) if (a := self_attr(n)) is not None}
                        filled = {a for c in calls if isinstance(c.func, cst.Attribute)
                                  and c.func.attr.value in ("append", "extend", "insert")
                                  and (a := self_attr(c.func.value)) is not None}
                        for attr in iterated | filled:
                            out.setdefault(attr, []).append(None)
        return out

    def _unpacked_registry(self, nodes: list[cst.CSTNode]) -> None:
        """The seed's pattern: ``blocks = list(self.backbone); del self.backbone; self.backbone = blocks``."""
        deleted = {a for n in nodes if isinstance(n, cst.Del)
                   for t in (n.target.elements if isinstance(n.target, cst.Tuple) else [n.target])
                   if (a := self_attr(t.value if isinstance(t, cst.Element) else t)) is not None}
        if not deleted:
            return
        derived: dict[str, str] = {}
        for node in nodes:
            if isinstance(node, cst.Assign):
                source = _unpacked_attr(node.value)
                for t in node.targets:
                    if isinstance(t.target, cst.Name) and source:
                        derived[t.target.value] = source
        for node in nodes:
            if not isinstance(node, cst.Assign):
                continue
            source = _unpacked_attr(node.value) or (derived.get(node.value.value) if isinstance(node.value, cst.Name) else None)
            if source not in deleted:
                continue
            for t in node.targets:
                attr = self_attr(t.target)
                if attr is not None:
                    self._hit("unpacked", node, attr, "module", source=source)
