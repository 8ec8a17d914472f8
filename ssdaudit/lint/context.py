"""What one file's rules share: its libcst tree, what its names mean (torch.nn aliases, imported classes), where a
node is (positions, resolved lazily: only files with a hit pay for them), and the node predicates rules ask
(``is_module_ctor``, ``is_parameter_ctor`` ...). No torch: names are read from the source, nothing is imported.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import libcst as cst
from libcst.metadata import CodePosition, CodeRange, MetadataWrapper, PositionProvider

from ssdaudit.core.findings import Edit, Fix, Severity

MODULE_BASES = {"Module", "Sequential", "ModuleList", "ModuleDict", "LightningModule"}
NOT_MODULES = {"Parameter", "ParameterList", "ParameterDict", "Buffer", "UninitializedParameter", "UninitializedBuffer",
               "functional", "init", "utils", "Identity_"}
PARAMETER_CALLS = {"Parameter", "UninitializedParameter"}
TENSOR_FACTORIES = {"zeros", "ones", "rand", "randn", "randint", "tensor", "as_tensor", "arange", "empty", "full",
                    "eye", "linspace", "logspace", "from_numpy", "zeros_like", "ones_like", "randn_like", "rand_like",
                    "empty_like", "full_like", "stack", "cat", "randperm", "tril_indices", "triu_indices", "hann_window",
                    "hamming_window", "blackman_window", "bartlett_window", "kaiser_window"}
# torch functions that do not return a tensor although their argument is one.
NOT_TENSOR_RESULTS = {"is_tensor", "is_floating_point", "is_complex", "numel", "equal", "allclose", "is_nonzero",
                      "is_storage", "typename", "result_type", "promote_types", "can_cast"}
CONTAINER_CALLS = {"list", "tuple", "dict", "set", "OrderedDict", "deque", "defaultdict"}
REGISTERING_CONTAINERS = {"ModuleList", "ModuleDict", "Sequential", "ParameterList", "ParameterDict"}
REGISTERING_CALLS = {"add_module", "register_module", "register_parameter", "register_buffer"}
MOVE_METHODS = {"to", "cuda", "half", "float", "double", "bfloat16", "cpu", "type"}
# Tensor methods that return a tensor (a new one, or a view): a factory followed by them is still a tensor.
TENSOR_METHODS = MOVE_METHODS | {
    "long", "int", "bool", "t", "T", "view", "view_as", "reshape", "reshape_as", "unsqueeze", "squeeze", "transpose",
    "permute", "expand", "expand_as", "repeat", "repeat_interleave", "flip", "flatten", "contiguous", "clone", "detach",
    "exp", "log", "sqrt", "rsqrt", "sin", "cos", "pow", "abs", "neg", "reciprocal", "cumsum", "cumprod", "sum", "mean",
    "triu", "tril", "masked_fill", "mul", "div", "add", "sub", "matmul", "softmax", "sigmoid", "tanh", "clamp",
    "narrow", "diag", "outer", "unfold", "roll", "fill_", "zero_", "normal_", "uniform_", "mul_", "add_", "div_",
    "masked_fill_", "fill_diagonal_", "requires_grad_"}
PLAIN_OBJECT_CALLS = {"SimpleNamespace", "partial", "namedtuple"}
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
# "X as Y" anywhere in the text: the alias map of the class-graph pre-pass (a superset is harmless there).
_ALIAS = re.compile(r"\b(\w+)\s+as\s+(\w+)\b")
_CLASS = re.compile(r"^[ \t]*class[ \t]+(\w+)[ \t]*\(([^)]*)\)", re.MULTILINE)


@dataclass
class Hit:
    """What a rule's check reports: the node (its position becomes the finding's location), the symbol, the
    message, a severity when not the rule's default, and data its fix reads."""

    node: cst.CSTNode
    symbol: str
    message: str
    severity: Severity | None = None
    data: Any = None  # what the rule's fix needs (its own check put it there)


def dotted(node: cst.CSTNode) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr.value}" if base else None
    return None


def is_self(node: cst.CSTNode) -> bool:
    return isinstance(node, cst.Name) and node.value == "self"


def self_attr(node: cst.CSTNode) -> str | None:
    """``x`` for ``self.x``, else None."""
    return node.attr.value if isinstance(node, cst.Attribute) and is_self(node.value) else None


# Fields that hold only punctuation and whitespace: walk() skips them (libcst's ``children`` visits everything
# through its visitor machinery, ten times slower than reading the dataclass fields).
_TRIVIA = ("whitespace", "lpar", "rpar", "comma", "semicolon", "dot", "colon", "lbracket", "rbracket", "lbrace",
           "rbrace", "equal", "header", "footer", "leading_lines", "lines_after_decorators", "newline", "asynchronous",
           "star", "first_line", "empty_lines", "trailing", "default_indent", "default_newline", "encoding")


@functools.cache
def _fields(kind: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(kind)
                 if f.name != "operator" and not any(t in f.name for t in _TRIVIA))


_NODE_TYPES: dict[type, bool] = {}


def _is_node(kind: type) -> bool:
    known = _NODE_TYPES.get(kind)
    if known is None:
        known = _NODE_TYPES[kind] = issubclass(kind, cst.CSTNode)
    return known


def children(node: cst.CSTNode) -> list[cst.CSTNode]:
    """The child nodes that carry code, in source order (punctuation and whitespace left out)."""
    out: list[cst.CSTNode] = []
    for name in _fields(type(node)):
        value = getattr(node, name)
        kind = type(value)
        if kind is tuple or kind is list:
            out.extend(v for v in value if _is_node(type(v)))
        elif _is_node(kind):
            out.append(value)
    return out


def walk(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """Every node under ``node`` (itself included), depth first in source order."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(children(n)))


_BLOCKS = (cst.BaseStatement, cst.BaseSuite, cst.BaseSmallStatement, cst.ExceptHandler, cst.ExceptStarHandler,
           cst.Else, cst.Finally, cst.If, cst.MatchCase)


_BLOCK_TYPES: dict[type, bool] = {}


def _is_block(kind: type) -> bool:
    known = _BLOCK_TYPES.get(kind)
    if known is None:
        known = _BLOCK_TYPES[kind] = issubclass(kind, _BLOCKS)
    return known


def statements(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """The statements under ``node`` (small ones included), in source order, without entering expressions."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed([c for c in children(n) if _is_block(type(c))]))


def calls_in(node: cst.CSTNode) -> Iterator[cst.Call]:
    return (n for n in walk(node) if isinstance(n, cst.Call))


def method_name(call: cst.Call) -> str | None:
    """``step`` for ``x.step(...)``."""
    return call.func.attr.value if isinstance(call.func, cst.Attribute) else None


def receiver(call: cst.Call) -> str | None:
    """``opt`` for ``opt.step()``, ``self.opt`` for ``self.opt.step()``."""
    return dotted(call.func.value) if isinstance(call.func, cst.Attribute) else None


def class_edges(source: str) -> dict[str, set[str]]:
    """class name -> its base names (aliases resolved), read with regular expressions: the cross-file pre-pass that
    tells which classes derive from nn.Module without parsing every file twice."""
    aliases = {alias: name for name, alias in _ALIAS.findall(source)}
    edges: dict[str, set[str]] = {}
    for name, bases in _CLASS.findall(source):
        out = edges.setdefault(name, set())
        for base in bases.split(","):
            base = base.strip().split("[", 1)[0]
            if not base or "=" in base:
                continue
            last = base.rpartition(".")[2]
            out.add(aliases.get(last, last))
    return edges


def module_classes(edges: dict[str, set[str]]) -> set[str]:
    """Class names that derive from nn.Module, to a fixed point over all files' edges."""
    known = set(MODULE_BASES)
    changed = True
    while changed:
        changed = False
        for name, bases in edges.items():
            if name not in known and bases & known:
                known.add(name)
                changed = True
    return known - {"Module"}


class _Imports:
    def __init__(self) -> None:
        self.nn_aliases = {"nn"}
        self.torch_aliases = {"torch"}
        self.functional: set[str] = set()  # import torch.nn.functional as F
        self.from_nn: set[str] = set()
        self.aliases: dict[str, str] = {}
        # Names the file really binds (the alias sets above also hold the usual names, for detection): a fix may
        # only write code through these.
        self.bound_nn: set[str] = set()  # from torch import nn [as X]; import torch.nn as X
        self.bound_torch: set[str] = set()  # import torch [as X]; import torch.nn (binds torch)

    def visit_Import(self, node: cst.Import) -> None:
        for a in node.names:
            name = dotted(a.name) or ""
            asname = a.asname.name.value if a.asname is not None and isinstance(a.asname.name, cst.Name) else None
            if name == "torch":
                self.torch_aliases.add(asname or "torch")
                self.bound_torch.add(asname or "torch")
            elif name == "torch.nn":
                self.nn_aliases.add(asname or "torch.nn")
                if asname:
                    self.bound_nn.add(asname)
                else:
                    self.bound_torch.add("torch")
            elif name.startswith("torch.") and not asname:
                self.bound_torch.add("torch")  # import torch.nn.functional binds torch too
            elif name == "torch.nn.functional" and asname:
                self.functional.add(asname)

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if isinstance(node.names, cst.ImportStar):
            return
        module = dotted(node.module) if node.module is not None and not node.relative else None
        for a in node.names:
            name = dotted(a.name) or ""
            asname = a.asname.name.value if a.asname is not None and isinstance(a.asname.name, cst.Name) else None
            if asname:
                self.aliases[asname] = name
            if module == "torch" and name == "nn":
                self.nn_aliases.add(asname or "nn")
                self.bound_nn.add(asname or "nn")
            elif module in ("torch.nn", "torch.nn.modules"):
                self.from_nn.add(asname or name)
                if name == "functional":
                    self.functional.add(asname or name)


class FileContext:
    """One parsed file and what its names mean; rules read it, the engine turns hits into findings."""

    def __init__(self, path: Path, source: str, module: cst.Module, classes: set[str]) -> None:
        self.path, self.source, self.module = path, source, module
        self.lines = source.splitlines()
        self.module_classes = classes
        imports = _Imports()
        for stmt in statements(module):
            if isinstance(stmt, cst.Import):
                imports.visit_Import(stmt)
            elif isinstance(stmt, cst.ImportFrom):
                imports.visit_ImportFrom(stmt)
        self.nn_aliases, self.torch_aliases = imports.nn_aliases, imports.torch_aliases
        self.from_nn, self.aliases, self.functional = imports.from_nn, imports.aliases, imports.functional
        self.bound_nn, self.bound_torch = imports.bound_nn, imports.bound_torch
        self._positions: dict[cst.CSTNode, CodeRange] | None = None
        self.cache: dict[str, object] = {}  # analyses shared by several rules (the class scans), by name

    # --- positions ---------------------------------------------------------------------------------------

    def range(self, node: cst.CSTNode) -> CodeRange:
        """Where ``node`` is (1-based lines, 0-based columns). Positions are resolved for the top-level statement
        that holds the node, on first use (libcst's PositionProvider over a whole file costs more than its parse)."""
        if self._positions is None:
            self._positions = {}
        found = self._positions.get(node)
        if found is None:
            top = next((stmt for stmt in self.module.body if any(n is node for n in walk(stmt))), None)
            self._positions.update(self._statement_positions(top))
            found = self._positions[node]
        return found

    def _statement_positions(self, stmt: cst.CSTNode | None) -> dict[cst.CSTNode, CodeRange]:
        code = self.module.code_for_node(stmt) if stmt is not None else ""
        at = self.source.find(code) if code else -1
        if at < 0 or self.source.find(code, at + 1) >= 0:  # not found once: the whole file, the slow way
            wrapper = MetadataWrapper(self.module, unsafe_skip_copy=True)  # keeps node identity
            return dict(wrapper.resolve(PositionProvider))
        assert isinstance(stmt, (cst.SimpleStatementLine, cst.BaseCompoundStatement))
        lines = self.source.count("\n", 0, at)
        alone = cst.Module(body=[stmt], header=[], footer=[], default_indent=self.module.default_indent,
                           default_newline=self.module.default_newline)
        out: dict[cst.CSTNode, CodeRange] = {}
        for n, r in MetadataWrapper(alone, unsafe_skip_copy=True).resolve(PositionProvider).items():
            out[n] = CodeRange(CodePosition(r.start.line + lines, r.start.column), CodePosition(r.end.line + lines, r.end.column))
        return out

    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    def replace(self, node: cst.CSTNode, text: str) -> Edit:
        r = self.range(node)
        return Edit(r.start.line, r.start.column + 1, r.end.line, r.end.column + 1, text)

    def insert_before(self, node: cst.CSTNode, text: str) -> Edit:
        r = self.range(node)
        return Edit(r.start.line, r.start.column + 1, r.start.line, r.start.column + 1, text)

    def insert_after(self, node: cst.CSTNode, text: str) -> Edit:
        r = self.range(node)
        return Edit(r.end.line, r.end.column + 1, r.end.line, r.end.column + 1, text)

    def wrap(self, node: cst.CSTNode, before: str, after: str = ")") -> list[Edit]:
        """``before`` + node + ``after`` as two insertions, so the node's own text (comments, line breaks) stays."""
        return [self.insert_before(node, before), self.insert_after(node, after)]

    def fix(self, title: str, safe: bool, edits: list[Edit]) -> Fix:
        return Fix(title, safe, tuple(edits))

    # --- names -------------------------------------------------------------------------------------------

    def original(self, name: str) -> str:
        return self.aliases.get(name, name)

    def nn_member(self, func: cst.CSTNode) -> str | None:
        """'Conv2d' for nn.Conv2d / torch.nn.Conv2d / Conv2d imported from torch.nn, else None."""
        name = dotted(func)
        if name is None:
            return None
        head, _, last = name.rpartition(".")
        if head in self.nn_aliases or head in {f"{t}.nn" for t in self.torch_aliases}:
            return last
        if not head and last in self.from_nn:
            return last
        return None

    def nn_prefix(self) -> str | None:
        """How this file can name torch.nn in the code a fix writes (``nn.``, ``tnn.``, ``torch.nn.``, ``th.nn.``),
        from the names its imports bind; None when no import binds torch or torch.nn (``from torch.nn import
        Linear`` only), and then no fix is offered rather than one that would not import."""
        if self.bound_nn:
            return "nn." if "nn" in self.bound_nn else sorted(self.bound_nn)[0] + "."
        if self.bound_torch:
            return ("torch" if "torch" in self.bound_torch else sorted(self.bound_torch)[0]) + ".nn."
        return None

    def torch_prefix(self) -> str | None:
        """How this file can name torch itself (``torch.``, ``th.``); None when no import binds it."""
        if self.bound_torch:
            return ("torch" if "torch" in self.bound_torch else sorted(self.bound_torch)[0]) + "."
        return None

    def functional_prefix(self) -> str | None:
        """How this file names torch.nn.functional (``F.``); None when it cannot (see ``nn_prefix``)."""
        if self.functional:
            return sorted(self.functional)[0] + "."
        nn = self.nn_prefix()
        return nn + "functional." if nn is not None else None

    def is_module_ctor(self, node: cst.CSTNode) -> bool:
        if not isinstance(node, cst.Call):
            return False
        member = self.nn_member(node.func)
        if member is not None:
            return member[:1].isupper() and member not in NOT_MODULES
        name = dotted(node.func)
        if name is None or name.split(".", 1)[0] == "self":
            return False
        return self.original(name.rpartition(".")[2]) in self.module_classes

    def is_parameter_free(self, node: cst.Call) -> bool:
        member = self.nn_member(node.func) or ""
        return member in PARAMETER_FREE or member.endswith(("Loss", "Pad1d", "Pad2d", "Pad3d"))

    def is_registering_container(self, node: cst.CSTNode) -> bool:
        return isinstance(node, cst.Call) and (self.nn_member(node.func) or "") in REGISTERING_CONTAINERS

    def is_parameter_ctor(self, node: cst.CSTNode) -> bool:
        return isinstance(node, cst.Call) and self.nn_member(node.func) in PARAMETER_CALLS

    def is_tensor_factory(self, node: cst.CSTNode) -> bool:
        if not isinstance(node, cst.Call):
            return False
        head, _, last = (dotted(node.func) or "").rpartition(".")
        return head in self.torch_aliases and last in TENSOR_FACTORIES

    def is_tensor_expr(self, node: cst.CSTNode) -> bool:
        """A tensor factory, or one followed by tensor methods, indexing or arithmetic with anything
        (``torch.zeros(n, n).t()``, ``torch.arange(n).float() / n``, ``torch.eye(n)[None]``)."""
        if self.is_tensor_factory(node):
            return True
        if isinstance(node, cst.Call) and any(self.is_tensor_expr(a.value) for a in node.args if not a.keyword):
            # a torch function of a tensor: torch.tril(torch.ones(n, n)), torch.exp(torch.arange(n) * -k)
            head, _, last = (dotted(node.func) or "").rpartition(".")
            if head in self.torch_aliases and last not in NOT_TENSOR_RESULTS:
                return True
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value in TENSOR_METHODS:
            return self.is_tensor_expr(node.func.value)
        if isinstance(node, cst.Subscript):
            return self.is_tensor_expr(node.value)
        if isinstance(node, cst.BinaryOperation):
            return self.is_tensor_expr(node.left) or self.is_tensor_expr(node.right)
        if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
            return self.is_tensor_expr(node.expression)
        return False

    def is_module_class(self, node: cst.ClassDef) -> bool:
        for base in node.bases:
            member = self.nn_member(base.value)
            if member is not None and member in MODULE_BASES:
                return True
            name = self.original((dotted(base.value) or "").rpartition(".")[2])
            if name in self.module_classes or name in MODULE_BASES - {"Module"}:
                return True
        return False

    def module_class_defs(self) -> list[cst.ClassDef]:
        """The nn.Module classes of the file, nested ones included."""
        cached = self.cache.get("classes")
        if cached is None:
            cached = [n for n in statements(self.module) if isinstance(n, cst.ClassDef) and self.is_module_class(n)]
            self.cache["classes"] = cached
        assert isinstance(cached, list)
        return cached
