"""What the gradflow probe's first forward (and loss) did, as evidence for G002: which modules ran, and where the
autograd graph was cut.

``ForwardTracer`` watches one forward + loss of the probe (``probe_training``'s first step), never the user's own
training loop: per-module hooks record which modules were called and which of them returned outputs without a
``grad_fn`` (ran under ``torch.no_grad()``, or cut inside), and a ``TorchFunctionMode`` records every tensor made
from another tensor's data while that tensor required grad (``.detach()``, ``.data``, ``.numpy()``, ``.item()``,
``.tolist()``, ``torch.tensor(t)``, ``t.new_tensor(...)``), with the user's source line. After backward,
``evidence()`` walks each cut's graph to the parameters upstream of it and returns a frozen ``ForwardTrace``.

Nothing here changes a number: the mode calls every function with its own arguments and returns its result; a
failure of our bookkeeping disables it for the rest of the step (``ForwardTrace.complete`` False), never raises.
"""

from __future__ import annotations

import linecache
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

_MAX_CUTS = 256  # cut events kept per traced step (a forward that detaches per element would keep thousands)
_MAX_NODES = 200_000  # autograd nodes walked over all cuts together, when naming what lies upstream of them

_CUT_METHODS = {
    torch.Tensor.detach: ".detach()",
    torch.Tensor.numpy: ".numpy()",
    torch.Tensor.item: ".item()",
    torch.Tensor.tolist: ".tolist()",
    torch.Tensor.new_tensor: ".new_tensor()",
    torch.tensor: "torch.tensor()",
}
_DATA_GET = torch.Tensor.data.__get__  # type: ignore[attr-defined]
_SKIP_DIRS = tuple(os.path.dirname(m.__file__ or "") + os.sep for m in (torch,)) + (
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + os.sep,)


@dataclass(frozen=True)
class Cut:
    """A tensor made from another tensor's data while that one required grad: the graph ends there."""

    kind: str  # ".detach()", ".data", ".numpy()", "torch.tensor()", ...
    where: str  # "file.py:15" in the user's code, or "" when no frame outside torch and ssdaudit was found
    code: str  # that line's source, stripped ("" when unknown)
    of_module: str | None  # the module whose output was cut ("backbone"), when the tensor was a module's output
    inside: str | None  # the module whose forward was running when the cut happened (None: the model's own forward)
    upstream: frozenset[str]  # names of the model's parameters the cut tensor depended on

    def describe(self) -> str:
        what = f"{self.kind} of the output of `{self.of_module}`" if self.of_module else f"{self.kind} of a tensor that needs grad"
        if self.inside:
            what += f" inside `{self.inside}`'s forward"
        if self.where:
            what += f" at {self.where}" + (f" (`{self.code}`)" if self.code else "")
        return what


@dataclass(frozen=True)
class ForwardTrace:
    """Evidence from one probe forward + loss: the modules that ran (paths, "" the model itself), the modules that
    ran with gradients disabled (outermost only), the modules whose outputs had no grad_fn though their input or
    their own parameters needed grad (first in completion order first), the cuts, and whether forward returned a
    scalar (then that scalar is the loss: no guess)."""

    ran: frozenset[str]
    no_grad: tuple[str, ...]
    cut_modules: tuple[str, ...]
    cuts: tuple[Cut, ...]
    returned_scalar: bool
    complete: bool = True  # False: our bookkeeping failed part-way (what it saw still counts)

    def cut_for(self, params: set[str], module: str) -> str | None:
        """Where the graph to ``params`` (parameters of ``module``) was cut, in words; None when it was not seen."""
        for cut in self.cuts:
            if cut.upstream & params:
                return cut.describe()
        for path in self.no_grad:
            if _covers(path, module):
                return f"`{path or '<model>'}` ran under torch.no_grad() (or with gradients disabled)"
        for path in self.cut_modules:
            if _covers(path, module):
                return f"`{path or '<model>'}` returned outputs without a grad_fn (the graph is cut inside its forward)"
        return None


def _covers(ancestor: str, path: str) -> bool:
    return ancestor == "" or path == ancestor or path.startswith(ancestor + ".")


def _needs_grad(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad


def _float_tensors(value: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())]


def _user_frame() -> tuple[str, str]:
    """("file.py:line", source line) of the innermost frame outside torch and ssdaudit."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_SKIP_DIRS) and not filename.startswith("<"):
            line = linecache.getline(filename, frame.f_lineno).strip()
            if " #" in line and "'" not in line and '"' not in line:  # a trailing comment, outside any string
                line = line.split(" #", 1)[0].rstrip()
            return f"{os.path.basename(filename)}:{frame.f_lineno}", line
        frame = frame.f_back  # type: ignore[assignment]
    return "", ""


class _CutMode(TorchFunctionMode):
    def __init__(self, tracer: "ForwardTracer") -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        tracer = self.tracer
        if tracer.active and args and (func == _DATA_GET or func in _CUT_METHODS):
            try:
                source = args[1] if func is torch.Tensor.new_tensor and len(args) > 1 else args[0]
                if _needs_grad(source) and len(tracer.cuts) < _MAX_CUTS:
                    tracer.record_cut(".data" if func == _DATA_GET else _CUT_METHODS[func], source)
            except Exception:  # never into the user's forward: stop looking instead
                tracer.fail()
        return out


@dataclass
class _RawCut:
    kind: str
    where: str
    code: str
    of_module: str | None
    inside: str | None
    root: Any  # the cut tensor's grad_fn, or the leaf itself


class ForwardTracer:
    """Context manager around one forward + loss of the probe (see the module's docstring); ``evidence()`` after
    backward. ``model``: the model the probe trains (its module paths name everything)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.active = True
        self.failed = False
        self.names = {id(m): n for n, m in model.named_modules()}
        self.trainable = {n for n, m in model.named_modules() if any(p.requires_grad for p in m.parameters())}
        self.ran: set[str] = set()
        self.no_grad: list[str] = []
        self.cut_modules: list[str] = []
        self.cuts: list[_RawCut] = []
        self.outputs: dict[int, tuple[str, torch.Tensor]] = {}  # id(output tensor) -> (module, the tensor: id stays unique)
        self.stack: list[tuple[str, bool]] = []  # (module path, grad enabled) of the calls in progress
        self.returned_scalar = False
        self._handles: list[Any] = []
        self._mode: _CutMode | None = None

    def __enter__(self) -> "ForwardTracer":
        for module in self.model.modules():
            try:
                self._handles.append(module.register_forward_pre_hook(self._pre, with_kwargs=True))
                self._handles.append(module.register_forward_hook(self._post, with_kwargs=True, always_call=True))
            except Exception:  # a module that takes no hooks (TorchScript): not followed
                self.failed = True
        if type(self.model).__name__ != "OptimizedModule":  # a compiled model: dynamo would trace into the mode
            self._mode = _CutMode(self)
            self._mode.__enter__()  # type: ignore[no-untyped-call]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)  # type: ignore[no-untyped-call]
            self._mode = None
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.active = False

    def fail(self) -> None:
        self.active, self.failed = False, True

    def model_output(self, output: Any) -> None:
        """What forward returned: a floating-point scalar is the loss itself."""
        self.returned_scalar = isinstance(output, torch.Tensor) and output.is_floating_point() and output.numel() == 1

    # --- hooks ------------------------------------------------------------------------------------------

    def _pre(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        if not self.active:
            return
        try:
            path = self.names.get(id(module))
            if path is None:
                return
            enabled = torch.is_grad_enabled()
            if not enabled and path in self.trainable and (not self.stack or self.stack[-1][1]):
                self.no_grad.append(path)  # the outermost call that ran with gradients disabled
            self.ran.add(path)
            self.stack.append((path, enabled))
        except Exception:
            self.fail()

    def _post(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if not self.active:
            return
        try:
            path = self.names.get(id(module))
            if path is None or not self.stack or self.stack[-1][0] != path:
                return
            _, enabled = self.stack.pop()
            outs = _float_tensors(output)
            if enabled and outs and not any(t.requires_grad for t in outs):
                wanted = path in self.trainable or any(_needs_grad(t) for t in tree_flatten((args, kwargs))[0])
                if wanted:
                    self.cut_modules.append(path)
            for t in outs:
                if t.requires_grad:
                    self.outputs[id(t)] = (path, t)
        except Exception:
            self.fail()

    def record_cut(self, kind: str, source: torch.Tensor) -> None:
        where, code = _user_frame()
        owner = self.outputs.get(id(source))
        of_module = owner[0] if owner is not None and owner[1] is source else None
        inside = self.stack[-1][0] if self.stack else None
        root = source.grad_fn if source.grad_fn is not None else source
        self.cuts.append(_RawCut(kind, where, code, of_module, inside or None, root))

    # --- evidence -------------------------------------------------------------------------------------------

    def evidence(self) -> ForwardTrace:
        """The frozen trace; each cut's upstream parameters found by walking its graph (after backward the nodes
        and their edges are still there). Drops every reference to the user's tensors."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        budget = _MAX_NODES
        cuts = []
        for raw in self.cuts:
            upstream: set[str] = set()
            if isinstance(raw.root, torch.Tensor):
                if id(raw.root) in names:
                    upstream.add(names[id(raw.root)])
            else:
                seen: dict[int, Any] = {}  # the node objects themselves: ids stay unique during the walk
                stack = [raw.root]
                while stack and budget > 0:
                    node = stack.pop()
                    if node is None or id(node) in seen:
                        continue
                    seen[id(node)] = node
                    budget -= 1
                    var = getattr(node, "variable", None)
                    if isinstance(var, torch.Tensor) and id(var) in names:
                        upstream.add(names[id(var)])
                    stack.extend(fn for fn, _ in getattr(node, "next_functions", ()))
            cuts.append(Cut(raw.kind, raw.where, raw.code, raw.of_module, raw.inside, frozenset(upstream)))
        trace = ForwardTrace(frozenset(self.ran), tuple(self.no_grad), tuple(self.cut_modules), tuple(cuts),
                             self.returned_scalar, not self.failed)
        self.cuts, self.outputs = [], {}
        return trace
