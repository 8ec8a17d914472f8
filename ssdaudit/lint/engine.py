"""The registration rules read from source (AST): nothing is imported or executed.

Inside classes that subclass nn.Module (directly, through torch.nn containers, or through another class of the
linted files), it flags:

* R001 ``self.x = [nn.Linear(...), ...]`` (list/tuple/set/dict literals, comprehensions, ``list(...)``,
  ``dict(...)``, ``OrderedDict(...)``) holding module constructors or names bound to them, and
  ``self.x.append(<module>)`` / ``self.x[k] = <module>`` on such plain containers;
* R002 the same with ``nn.Parameter``;
* R003 a module constructor passed into a plain object (``SimpleNamespace(head=nn.Linear(...))``, ``partial``);
* R004 ``self.x = torch.zeros(...)`` (a plain tensor) in ``__init__`` that ``forward`` reads;
* R005 a module constructed inside ``forward``.

A finding on a line with ``# ssdaudit: ignore`` or ``# ssdaudit: ignore[R001,...]`` is suppressed.
"""

from __future__ import annotations

import ast
import collections
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Callable, Iterator

from ssdaudit.core.findings import RULES, Finding, Severity

MODULE_BASES = {"Module", "Sequential", "ModuleList", "ModuleDict", "LightningModule"}
NOT_MODULES = {"Parameter", "ParameterList", "ParameterDict", "Buffer", "UninitializedParameter", "UninitializedBuffer",
               "functional", "init", "utils", "Identity_"}
PARAMETER_CALLS = {"Parameter", "UninitializedParameter"}
TENSOR_FACTORIES = {"zeros", "ones", "rand", "randn", "randint", "tensor", "as_tensor", "arange", "empty", "full",
                    "eye", "linspace", "logspace", "from_numpy", "zeros_like", "ones_like", "randn_like", "rand_like",
                    "empty_like", "full_like", "stack", "cat"}
CONTAINER_CALLS = {"list", "tuple", "dict", "set", "OrderedDict", "deque", "defaultdict"}
REGISTERING_CONTAINERS = {"ModuleList", "ModuleDict", "Sequential", "ParameterList", "ParameterDict"}
REGISTERING_CALLS = {"add_module", "register_module", "register_parameter", "register_buffer"}
MOVE_METHODS = {"to", "cuda", "half", "float", "double", "bfloat16", "cpu", "type"}
# torch.nn modules with no parameters and no mode: building one inside forward() costs nothing but the call.
PARAMETER_FREE = {
    "ReLU", "ReLU6", "GELU", "SiLU", "Sigmoid", "Tanh", "Softmax", "Softmax2d", "LogSoftmax", "Softmin", "Softplus",
    "Softsign", "LeakyReLU", "ELU", "CELU", "SELU", "Hardswish", "Hardsigmoid", "Hardtanh", "Hardshrink",
    "Softshrink", "Tanhshrink", "Threshold", "Mish", "GLU", "LogSigmoid", "Identity", "Flatten", "Unflatten",
    "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d",
    "LPPool1d", "LPPool2d", "MaxUnpool1d", "MaxUnpool2d", "MaxUnpool3d", "Upsample", "UpsamplingNearest2d",
    "UpsamplingBilinear2d", "PixelShuffle", "PixelUnshuffle", "ChannelShuffle", "Fold", "Unfold",
    "CosineSimilarity", "PairwiseDistance",
}
PLAIN_OBJECT_CALLS = {"SimpleNamespace", "partial", "namedtuple"}
_IGNORE = re.compile(r"#\s*ssdaudit:\s*ignore(?:\[([A-Z0-9,\s]+)\])?", re.IGNORECASE)


@dataclass
class LintResult:
    findings: list[Finding]
    files: int
    suppressed: int
    errors: list[str]  # files that could not be read (syntax errors are E999 findings)

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "suppressed": self.suppressed, "errors": self.errors,
                "findings": [f.to_dict() for f in self.findings]}

    def exit_code(self, strict: bool = False) -> int:
        """1 on any finding above a note: a lint rule reports what source alone shows, so warnings fail too."""
        return 1 if any(f.severity is not Severity.INFO for f in self.findings) else 0


def iter_python_files(paths: Sequence[str | Path]) -> list[Path]:
    """Python files under ``paths`` (files taken as given), sorted; hidden and virtual-env folders skipped."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            for f in sorted(p.rglob("*.py")):
                parts = f.relative_to(p).parts
                if not any(part.startswith(".") or part in ("__pycache__", "node_modules", "site-packages", "venv")
                           for part in parts[:-1]):
                    out.append(f)
    return out


class _Names(ast.NodeVisitor):
    """What the names in a file mean: aliases of torch.nn, names imported from it, local module classes."""

    def __init__(self) -> None:
        self.nn_aliases = {"nn"}  # import torch.nn as nn; from torch import nn
        self.torch_aliases = {"torch"}
        self.from_nn: set[str] = set()  # from torch.nn import Conv2d, Module
        self.aliases: dict[str, str] = {}  # from x import Y as Z: Z -> Y

    def original(self, name: str) -> str:
        """The imported name behind a local alias (``Z`` of ``from x import Y as Z`` is ``Y``)."""
        return self.aliases.get(name, name)

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name == "torch":
                self.torch_aliases.add(a.asname or "torch")
            elif a.name == "torch.nn":
                self.nn_aliases.add(a.asname or "torch.nn")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for a in node.names:
            if a.asname and a.name != "*":
                self.aliases[a.asname] = a.name
        if node.module == "torch":
            for a in node.names:
                if a.name == "nn":
                    self.nn_aliases.add(a.asname or "nn")
        elif node.module in ("torch.nn", "torch.nn.modules"):
            for a in node.names:
                self.from_nn.add(a.asname or a.name)


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


class _FileLinter:
    def __init__(self, path: Path, tree: ast.Module, lines: list[str], module_classes: set[str]) -> None:
        self.path, self.tree, self.lines = path, tree, lines
        self.names = _Names()
        self.names.visit(tree)
        self.module_classes = module_classes
        self.findings: list[Finding] = []
        self.scan: ClassScan | None = None  # the class being linted
        self.suppressed = 0

    # --- what a call constructs ---------------------------------------------------------------------

    def _nn_member(self, func: ast.AST) -> str | None:
        """'Conv2d' for nn.Conv2d / torch.nn.Conv2d / Conv2d imported from torch.nn, else None."""
        name = _dotted(func)
        if name is None:
            return None
        head, _, last = name.rpartition(".")
        if head in self.names.nn_aliases or head in {f"{t}.nn" for t in self.names.torch_aliases}:
            return last
        if not head and last in self.names.from_nn:
            return last
        return None

    def is_module_ctor(self, node: ast.AST) -> bool:
        if not isinstance(node, ast.Call):
            return False
        member = self._nn_member(node.func)
        if member is not None:
            return member[:1].isupper() and member not in NOT_MODULES
        name = _dotted(node.func)
        if name is None or name.split(".", 1)[0] == "self":  # a call of an existing attribute, whatever its case
            return False
        return self.names.original(name.rpartition(".")[2]) in self.module_classes

    def is_parameter_free(self, node: ast.Call) -> bool:
        """A torch.nn module without parameters or buffers (activations, pooling, padding, losses)."""
        member = self._nn_member(node.func) or ""
        return member in PARAMETER_FREE or member.endswith(("Loss", "Pad1d", "Pad2d", "Pad3d"))

    def is_registering_container(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Call) and (self._nn_member(node.func) or "") in REGISTERING_CONTAINERS

    def is_parameter_ctor(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Call) and self._nn_member(node.func) in PARAMETER_CALLS

    def is_tensor_factory(self, node: ast.AST) -> bool:
        if not isinstance(node, ast.Call):
            return False
        name = _dotted(node.func) or ""
        head, _, last = name.rpartition(".")
        return head in self.names.torch_aliases and last in TENSOR_FACTORIES

    # --- containers --------------------------------------------------------------------------------------

    def _elements(self, node: ast.AST) -> list[ast.AST] | None:
        """The element expressions of a plain container expression, or None when ``node`` is not one."""
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return [e.value if isinstance(e, ast.Starred) else e for e in node.elts]
        if isinstance(node, ast.Dict):
            return [v for v in node.values if v is not None]
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
            return [node.elt]
        if isinstance(node, ast.DictComp):
            return [node.value]
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = self._elements(node.left), self._elements(node.right)
            if left is None and right is None:
                return None
            return (left or []) + (right or [])
        if isinstance(node, ast.Call):
            name = (_dotted(node.func) or "").rpartition(".")[2]
            if name in CONTAINER_CALLS and not self._nn_member(node.func):
                out: list[ast.AST] = []
                for a in node.args:
                    inner = self._elements(a)
                    out += inner if inner is not None else [a]
                out += [k.value for k in node.keywords]
                return out
        return None

    def _kind(self, elements: list[ast.AST], bound: dict[str, str]) -> str | None:
        """'module' or 'parameter' when any element constructs one (directly or through a bound local name)."""
        for e in elements:
            inner = self._elements(e) if not isinstance(e, ast.Call) or not self.is_module_ctor(e) else None
            if inner is not None:  # lists of lists, (name, module) pairs for OrderedDict / dict(...)
                k = self._kind(inner, bound)
                if k:
                    return k
            if self.is_module_ctor(e):
                return "module"
            if self.is_parameter_ctor(e):
                return "parameter"
            if isinstance(e, ast.Name) and e.id in bound:
                return bound[e.id]
        return None

    # --- the class walk ----------------------------------------------------------------------------------

    def run(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ClassDef) and self._is_module_class(node):
                self._class(node)

    def _is_module_class(self, node: ast.ClassDef) -> bool:
        for base in node.bases:
            member = self._nn_member(base)
            if member is not None and member in MODULE_BASES | {"Module"}:
                return True
            name = self.names.original((_dotted(base) or "").rpartition(".")[2])
            if name in self.module_classes or name in MODULE_BASES - {"Module"} or name == "LightningModule":
                return True
        return False

    def _class(self, cls: ast.ClassDef) -> None:
        ctx = self._scan(cls)
        for code, check in LINT_CHECKS.items():
            for node, symbol, message, severity in check(self, ctx):
                self._emit(code, node, symbol, message, severity)

    def _scan(self, cls: ast.ClassDef) -> "ClassScan":
        """One pass over the class's methods: plain containers and what goes into them, tensors made in
        ``__init__``, wrapped modules, moved parameters. The rule checks read from it."""
        methods: dict[str, ast.AST] = {f.name: f for f in cls.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
        ctx = ClassScan(cls, methods)
        self.scan = ctx
        for fname, fn in methods.items():
            bound: dict[str, str] = {}
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign):
                    kind = "module" if self.is_module_ctor(node.value) else "parameter" if self.is_parameter_ctor(node.value) else None
                    for t in node.targets:
                        if isinstance(t, ast.Name) and kind:
                            bound[t.id] = kind
                        self._assignment(cls, fname, t, node.value, bound, ctx.plain, ctx.tensors)
                elif isinstance(node, ast.AnnAssign) and node.value is not None:
                    self._assignment(cls, fname, node.target, node.value, bound, ctx.plain, ctx.tensors)
            for node in ast.walk(fn):
                if isinstance(node, ast.Call):
                    self._append(cls, node, bound, ctx.plain)
            self._unpacked_registry(cls, fn)
        ctx.registered_later = self._registered_later(methods.values())
        return ctx

    def _registered_later(self, methods: Iterable[ast.AST]) -> dict[str, list[int | None]]:
        """Attributes the class registers beside holding them in a plain container, with the line where it does
        (None: wherever it is, it registers that container's own contents): ``self.x = nn.ModuleList(self.x)``,
        a registering container assigned to ``self.x`` on a later line, or a loop over ``self.x`` that calls
        ``self.add_module``/``register_*``/``setattr(self, ...)``."""
        out: dict[str, list[int | None]] = {}
        for fn in methods:
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign) and self.is_registering_container(node.value):
                    used = {n.attr for n in ast.walk(node.value) if isinstance(n, ast.Attribute) and _is_self(n.value)}
                    for t in node.targets:
                        if isinstance(t, ast.Attribute) and _is_self(t.value):
                            out.setdefault(t.attr, []).append(None if t.attr in used else node.lineno)
                elif isinstance(node, (ast.For, ast.AsyncFor)):
                    calls = [c for c in ast.walk(node) if isinstance(c, ast.Call)]
                    if any(_registers(c) for c in calls):
                        # iterated over (``for m in self.x: self.add_module(...)``) or filled in the same loop that
                        # registers each element (``self.x.append(block); self.add_module(str(i), block)``)
                        iterated = {n.attr for n in ast.walk(node.iter) if isinstance(n, ast.Attribute) and _is_self(n.value)}
                        filled = {c.func.value.attr for c in calls if isinstance(c.func, ast.Attribute)
                                  and c.func.attr in ("append", "extend", "insert")
                                  and isinstance(c.func.value, ast.Attribute) and _is_self(c.func.value.value)}
                        for attr in iterated | filled:
                            out.setdefault(attr, []).append(None)
        return out

    def _unpacked_registry(self, cls: ast.ClassDef, fn: ast.AST) -> None:
        """The seed's pattern: ``blocks = list(self.backbone); del self.backbone; self.backbone = blocks``.

        Unpacking a registered container into a plain list is harmless while the container stays (its modules
        remain registered through it); deleting it and keeping only the list unregisters every module."""
        deleted = {t.attr for node in ast.walk(fn) if isinstance(node, ast.Delete)
                   for t in node.targets if isinstance(t, ast.Attribute) and _is_self(t.value)}
        if not deleted:
            return
        derived: dict[str, str] = {}  # local name -> the attribute it unpacks
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign):
                source = _unpacked_attr(node.value)
                for t in node.targets:
                    if isinstance(t, ast.Name) and source:
                        derived[t.id] = source
        for node in ast.walk(fn):
            if not isinstance(node, ast.Assign):
                continue
            source = _unpacked_attr(node.value) or (derived.get(node.value.id) if isinstance(node.value, ast.Name) else None)
            if source not in deleted:
                continue
            for t in node.targets:
                if isinstance(t, ast.Attribute) and _is_self(t.value):
                    self._defer("R001", node, f"{cls.name}.{t.attr}",
                                f"self.{t.attr} holds the modules of self.{source} in a plain list after `del self.{source}`: "
                                "they leave parameters(), state_dict() and .to()", t.attr)

    def _assignment(self, cls: ast.ClassDef, fname: str, target: ast.AST, value: ast.AST, bound: dict[str, str],
                    plain: dict[str, str], tensors: dict[str, ast.AST]) -> None:
        if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Attribute) and _is_self(target.value.value):
            attr = target.value.attr  # self.x[k] = <module> on a plain container
            kind = self._kind([value], bound)
            if attr in plain and kind:
                self._defer("R001" if kind == "module" else "R002", target, f"{cls.name}.{attr}",
                            f"{kind} stored into the plain container self.{attr}: invisible to parameters()/state_dict()", attr)
            return
        if not (isinstance(target, ast.Attribute) and _is_self(target.value)):
            return
        attr = target.attr
        elements = self._elements(value)
        if elements is not None:
            kind = self._kind(elements, bound)
            plain[attr] = kind or ""
            if kind == "module":
                self._defer("R001", value, f"{cls.name}.{attr}",
                            f"self.{attr} holds nn.Module objects in a plain {_container_name(value)}: "
                            "parameters(), state_dict() and .to() will not see them", attr)
            elif kind == "parameter":
                self._defer("R002", value, f"{cls.name}.{attr}",
                            f"self.{attr} holds nn.Parameter objects in a plain {_container_name(value)}: "
                            "the optimizer and state_dict() will not see them", attr)
            return
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr in MOVE_METHODS
                and self.is_parameter_ctor(value.func.value)):
            self._defer("R009", value, f"{cls.name}.{attr}",
                        RULES["R009"].message.format(attr=attr, method=value.func.attr), attr)
            return
        if isinstance(value, ast.Call) and not self.is_module_ctor(value):
            name = (_dotted(value.func) or "").rpartition(".")[2]
            args = list(value.args) + [k.value for k in value.keywords]
            if name in PLAIN_OBJECT_CALLS and any(self.is_module_ctor(a) for a in args):
                self._defer("R003", value, f"{cls.name}.{attr}",
                            f"self.{attr} = {name}(...) wraps a module in a plain object: it will not be registered", attr)
                return
        if fname == "__init__" and self.is_tensor_factory(value):
            tensors[attr] = value

    def _append(self, cls: ast.ClassDef, call: ast.Call, bound: dict[str, str], plain: dict[str, str]) -> None:
        func = call.func
        if not (isinstance(func, ast.Attribute) and func.attr in ("append", "extend", "insert", "add", "appendleft")
                and isinstance(func.value, ast.Attribute) and _is_self(func.value.value)):
            return
        attr = func.value.attr
        if attr not in plain:
            return
        args = list(call.args[1:] if func.attr == "insert" else call.args)
        elements: list[ast.AST] = []
        for a in args:
            inner = self._elements(a) if func.attr == "extend" else None
            elements += inner if inner is not None else [a]
        kind = self._kind(elements, bound)
        if kind:
            self._defer("R001" if kind == "module" else "R002", call, f"{cls.name}.{attr}",
                        f"self.{attr}.{func.attr}(...) adds {'an nn.Module' if kind == 'module' else 'an nn.Parameter'} "
                        f"to a plain container: use nn.{'ModuleList' if kind == 'module' else 'ParameterList'}", attr)

    def _defer(self, code: str, node: ast.AST, symbol: str, message: str, attr: str) -> None:
        """A container hit: reported by its rule's check unless the class registers ``attr`` after all."""
        assert self.scan is not None, "hits are recorded while a class is scanned"
        self.scan.hits[code].append((node, symbol, message, attr))

    def _emit(self, code: str, node: ast.AST, symbol: str, message: str, severity: Severity | None = None) -> None:
        line = getattr(node, "lineno", 1)
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        m = _IGNORE.search(text)
        if m and (m.group(1) is None or code in {c.strip().upper() for c in m.group(1).split(",")}):
            self.suppressed += 1
            return
        col = getattr(node, "col_offset", 0) + 1
        self.findings.append(RULES[code].finding(symbol, message, location=f"{self.path}:{line}:{col}", severity=severity))


@dataclass
class ClassScan:
    """What one pass over an nn.Module class found; each rule's check reads what it needs from here."""

    cls: ast.ClassDef
    methods: dict[str, ast.AST]
    plain: dict[str, str] = field(default_factory=dict)  # attribute -> "module" | "parameter" | "" (plain container)
    tensors: dict[str, ast.AST] = field(default_factory=dict)  # tensors made in __init__, by attribute
    hits: dict[str, list[tuple[ast.AST, str, str, str]]] = field(default_factory=lambda: collections.defaultdict(list))
    registered_later: dict[str, list[int | None]] = field(default_factory=dict)

    def unregistered(self, code: str) -> Iterator[tuple[ast.AST, str, str, Severity | None]]:
        """The scan's hits of ``code`` whose container the class does not register after all."""
        for node, symbol, message, attr in self.hits.get(code, ()):
            lineno = getattr(node, "lineno", 0)
            if not any(line is None or line > lineno for line in self.registered_later.get(attr, ())):
                yield node, symbol, message, None

    def forward_reads(self) -> set[str]:
        forward = self.methods.get("forward")
        return {n.attr for n in ast.walk(forward) if isinstance(n, ast.Attribute) and _is_self(n.value)
                and isinstance(n.ctx, ast.Load)} if forward is not None else set()


# --- one check per rule (ruff's model): each yields (node, symbol, message, severity or None) ------------------

Emit = Iterator[tuple[ast.AST, str, str, "Severity | None"]]


def check_r001(_linter: "_FileLinter", scan: ClassScan) -> Emit:
    """Modules in plain containers (literals, comprehensions, .append, subscript stores, an unpacked registry)."""
    yield from scan.unregistered("R001")


def check_r002(_linter: "_FileLinter", scan: ClassScan) -> Emit:
    """Parameters in plain containers."""
    yield from scan.unregistered("R002")


def check_r003(_linter: "_FileLinter", scan: ClassScan) -> Emit:
    """A module constructor wrapped in a plain object (SimpleNamespace, partial, namedtuple)."""
    yield from scan.unregistered("R003")


def check_r004(_linter: "_FileLinter", scan: ClassScan) -> Emit:
    """A tensor made in __init__ and assigned to a plain attribute that forward() reads."""
    reads = scan.forward_reads()
    for attr, value in scan.tensors.items():
        if attr in reads:
            yield value, f"{scan.cls.name}.{attr}", f"self.{attr} is a plain tensor read in forward(): not moved by .to(), not saved", None


def check_r005(linter: "_FileLinter", scan: ClassScan) -> Emit:
    """A module constructed inside forward(); a parameter-free one (activations, pooling, losses) is a note."""
    forward = scan.methods.get("forward")
    for node in ast.walk(forward) if forward is not None else ():
        if isinstance(node, ast.Call) and linter.is_module_ctor(node):
            if linter.is_parameter_free(node):
                yield (node, f"{scan.cls.name}.forward", f"{_dotted(node.func)}(...) is built inside forward(): it holds no "
                       "parameters, so only the construction is repeated (torch.nn.functional avoids it)", Severity.INFO)
            else:
                yield (node, f"{scan.cls.name}.forward",
                       f"{_dotted(node.func)}(...) is built inside forward(): re-created every call, never trained", None)


def check_r009(_linter: "_FileLinter", scan: ClassScan) -> Emit:
    """nn.Parameter(...).to()/.cuda()/.half()... assigned to an attribute."""
    yield from scan.unregistered("R009")


def check_r010(_linter: "_FileLinter", scan: ClassScan) -> Emit:
    """self.register_buffer / register_parameter / add_module / register_module inside forward()."""
    forward = scan.methods.get("forward")
    for node in ast.walk(forward) if forward is not None else ():
        if isinstance(node, ast.Call) and _registers(node) and isinstance(node.func, ast.Attribute):
            yield (node, f"{scan.cls.name}.forward", RULES["R010"].message.format(method=node.func.attr), None)


LINT_CHECKS: dict[str, Callable[["_FileLinter", ClassScan], Emit]] = {
    "R001": check_r001, "R002": check_r002, "R003": check_r003, "R004": check_r004, "R005": check_r005,
    "R009": check_r009, "R010": check_r010,
}


def _unpacked_attr(node: ast.AST) -> str | None:
    """'backbone' for list(self.backbone), tuple(self.backbone), [m for m in self.backbone] (also .children())."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("list", "tuple") and node.args:
        node = node.args[0]
    elif isinstance(node, (ast.ListComp, ast.GeneratorExp)) and node.generators:
        node = node.generators[0].iter
    else:
        return None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("children", "modules"):
        node = node.func.value
    return node.attr if isinstance(node, ast.Attribute) and _is_self(node.value) else None


def _registers(call: ast.Call) -> bool:
    """self.add_module(...), self.register_module/parameter/buffer(...), setattr(self, ...)."""
    f = call.func
    if isinstance(f, ast.Attribute) and f.attr in REGISTERING_CALLS and _is_self(f.value):
        return True
    return isinstance(f, ast.Name) and f.id == "setattr" and bool(call.args) and _is_self(call.args[0])


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _container_name(node: ast.AST) -> str:
    if isinstance(node, (ast.List, ast.ListComp)):
        return "list"
    if isinstance(node, (ast.Dict, ast.DictComp)):
        return "dict"
    if isinstance(node, (ast.Set, ast.SetComp)):
        return "set"
    if isinstance(node, ast.Tuple):
        return "tuple"
    if isinstance(node, ast.Call):
        return f"{(_dotted(node.func) or 'container').rpartition('.')[2]}(...)"
    return "container"


def _module_classes(trees: list[ast.Module]) -> set[str]:
    """Class names (across all files) that derive from nn.Module, to a fixed point. Base names are read through
    each file's imports (``from .base import Block as B``; ``from torch.nn import Module as M``), so a class
    imported from another linted file under another name still counts."""
    edges: dict[str, set[str]] = {}
    for tree in trees:
        names = _Names()
        names.visit(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = set()
                for b in node.bases:
                    dotted = _dotted(b) or ""
                    head, _, last = dotted.rpartition(".")
                    if (head in names.nn_aliases or not head and last in names.from_nn) and last in MODULE_BASES:
                        bases.add("Module")
                    bases.add(names.original(last))
                edges.setdefault(node.name, set()).update(bases)
    known = set(MODULE_BASES)
    changed = True
    while changed:
        changed = False
        for name, bases in edges.items():
            if name not in known and bases & known:
                known.add(name)
                changed = True
    return known - {"Module"}


def _sort_key(f: Finding) -> tuple[str, int, int, str]:
    """File, then line and column as numbers (``m.py:5`` before ``m.py:10``), then rule."""
    loc = f.location
    return (loc.path, loc.line or 0, loc.col or 0, f.rule) if loc is not None else ("", 0, 0, f.rule)


def lint_paths(paths: Sequence[str | Path], ignore: AbstractSet[str] = frozenset(),
               exclude: Sequence[str | Path] = ()) -> LintResult:
    """Lint every Python file under ``paths``; ``ignore`` drops rule codes; files under ``exclude`` are read (their
    classes count as module bases) but not reported. Nothing is imported or run. A file that does not parse is an
    E999 finding, one that cannot be read is listed in ``errors``: nothing raises for a file's content."""
    files = iter_python_files(paths)
    parsed: list[tuple[Path, ast.Module, list[str]]] = []
    errors: list[str] = []
    syntax: list[Finding] = []
    for f in files:
        try:
            source = f.read_text(encoding="utf-8", errors="replace")
            parsed.append((f, ast.parse(source, filename=str(f)), source.splitlines()))
        except SyntaxError as exc:  # ruff's E999: the file is reported, and the run fails
            line, col = exc.lineno or 1, exc.offset or 1
            syntax.append(RULES["E999"].finding("", values={"error": exc.msg}, location=f"{f}:{line}:{col}", subject="file"))
        except (OSError, ValueError) as exc:
            errors.append(f"{f}: cannot read: {exc}")
    classes = _module_classes([t for _, t, _ in parsed])
    findings: list[Finding] = []
    suppressed = 0
    skipped = [Path(e).resolve() for e in exclude]
    for path, tree, lines in parsed:
        resolved = path.resolve()
        if any(resolved == e or e in resolved.parents for e in skipped):
            continue
        linter = _FileLinter(path, tree, lines, classes)
        linter.run()
        findings += [x for x in linter.findings if x.rule not in ignore]
        suppressed += linter.suppressed
    skipped_syntax = [x for x in syntax if x.location is not None and not any(
        Path(x.location.path).resolve() == e or e in Path(x.location.path).resolve().parents for e in skipped)]
    findings += [x for x in skipped_syntax if x.rule not in ignore]
    findings.sort(key=_sort_key)
    return LintResult(findings, len(files), suppressed, errors)
