"""``NonFiniteTracer``: an op-level trace that names the operation which first produced NaN or Inf from finite inputs.

A ``TorchFunctionMode`` sees every torch call of the Python code it is active around (the model's forward, the
user's loss code, ``backward()``), at the level the user wrote it (``log``, ``softmax``, ``div``, ``linear``), with
the module whose forward is running (its own global module hooks) and the user's file:line. For each call it checks
the floating-point outputs (a host sync per output: this is the expensive localisation, run only after the cheap
guard saw a first non-finite value), and only when an output is non-finite, the inputs:

* a NaN output from inputs without NaN, or an Inf output from finite inputs, is *produced* there; a call whose own
  arguments hold an infinite number (``masked_fill(mask, float("-inf"))``, ``torch.full(..., -inf)``) is a
  deliberate fill, never a producer;
* a non-finite output from non-finite inputs inherits the origin of those inputs (``origins``, by tensor identity);
* a NaN made from an Inf (``0 * -inf`` in a loss after ``log(0)``) is charged to the op that made the Inf, with the
  NaN-making op named as ``via``, unless the Inf was a deliberate fill (a softmax over an all-masked row is the
  producer itself).

For the backward, each call's autograd nodes get a hook: the first node whose gradients towards its inputs are
non-finite while those it received are finite is the backward producer (``sqrt`` of an exact 0), reported with the
forward call that made the node. Hooks only read; nothing the trace does changes a value.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import weakref
from dataclasses import dataclass, field
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ssdaudit.core.findings import Location
from ssdaudit.training.doctor.context import user_location

# Python operator names -> the operation a user wrote
_OP_NAMES = {"__truediv__": "div", "__rtruediv__": "div", "__itruediv__": "div_", "__div__": "div",
             "__mul__": "mul", "__rmul__": "mul", "__imul__": "mul_", "__pow__": "pow", "__rpow__": "pow",
             "__ipow__": "pow_", "__add__": "add", "__radd__": "add", "__iadd__": "add_", "__sub__": "sub",
             "__rsub__": "sub", "__isub__": "sub_", "__matmul__": "matmul", "__rmatmul__": "matmul",
             "__neg__": "neg", "__setitem__": "setitem", "__getitem__": "getitem", "true_divide": "div",
             "divide": "div", "multiply": "mul", "power": "pow", "float_power": "pow"}
# calls that never compute a value worth checking
_SKIP = {"__get__", "__set__", "size", "dim", "numel", "__len__", "__repr__", "__format__", "__bool__", "item",
         "tolist", "backward", "__hash__", "__eq__", "data_ptr", "stride", "is_floating_point", "__iter__",
         "__contains__", "__reduce_ex__", "storage_offset", "element_size", "__index__", "__int__", "__float__",
         "register_hook", "is_contiguous", "untyped_storage", "get_device", "_is_view", "requires_grad_", "numpy",
         "cpu", "cuda", "to", "detach", "clone", "contiguous", "view", "reshape", "flatten", "squeeze", "unsqueeze",
         "permute", "transpose", "expand", "expand_as", "view_as", "reshape_as", "__deepcopy__", "type", "float",
         "double", "half", "bfloat16", "t", "split", "chunk", "unbind"}
# copies and views: a non-finite output of one of these has the origin of its input (not inspected: that saves a sync
# per call; the origin is passed on to the output, so that its consumers know where its values came from)
_PASS_ORIGIN = {"cpu", "cuda", "to", "detach", "clone", "contiguous", "view", "reshape", "flatten", "squeeze",
                "unsqueeze", "permute", "transpose", "expand", "expand_as", "view_as", "reshape_as", "float",
                "double", "half", "bfloat16", "t", "split", "chunk", "unbind"}
_SOFTMAXES = {"softmax", "log_softmax", "scaled_dot_product_attention", "softmin", "_softmax"}

_local = threading.local()
_replays_lock = threading.Lock()
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_OUR_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + os.sep
# The wrappers that only pass a call on (the patch owner's dispatcher, the taps, the resume audit's observers): the
# call belongs to whoever called them (``F.cross_entropy`` called by the user through the tap is the user's call).
_PASS_THROUGH = frozenset(os.path.join(_OUR_DIR, *parts) for parts in (
    ("core", "patches.py"), ("training", "doctor", "taps.py"), ("training", "resume", "patches.py")))


def _from_us() -> bool:
    """Whether the torch call being traced was made by ssdaudit's own code (the monitor's statistics, a check),
    found from the innermost frame outside torch and outside the wrappers that only pass a call on
    (``_PASS_THROUGH``: the user's ``F.cross_entropy`` through the loss tap is the user's call)."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith(_TORCH_DIR)
                                 or frame.f_code.co_filename in _PASS_THROUGH):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return False
    return frame.f_code.co_filename.startswith(_OUR_DIR)


_replays = [0]  # replays in progress in any thread: the thread-local flag is read only while there is one
REPLAYS = _replays  # read by hooks on every module call before they call replaying(): one list read


def replaying() -> bool:
    """Whether the doctor is replaying a step on a copy of a module in this thread: its other hooks stay out of it.
    Called on every forward call the doctor sees: one list read when no replay runs anywhere."""
    return _replays[0] > 0 and bool(getattr(_local, "replaying", False))


@contextlib.contextmanager
def replay() -> Iterator[None]:
    """Mark this thread as replaying for the block (``replaying()``)."""
    with _replays_lock:
        _replays[0] += 1
    _local.replaying = True
    try:
        yield
    finally:
        _local.replaying = False
        with _replays_lock:
            _replays[0] -= 1


@dataclass(frozen=True)
class TensorSummary:
    """What a report says about a tensor: shape, dtype, the range of its finite values and its NaN/Inf counts."""

    shape: tuple[int, ...]
    dtype: str
    lo: float
    hi: float
    nan: int
    posinf: int
    neginf: int
    name: str = ""  # a parameter's name, when it is one

    @property
    def finite(self) -> bool:
        return not (self.nan or self.posinf or self.neginf)

    def __str__(self) -> str:
        shape = "(" + ", ".join(map(str, self.shape)) + ("," if len(self.shape) == 1 else "") + ")"
        bad = [f"{n:,} {w}" for n, w in ((self.nan, "NaN"), (self.posinf, "+inf"), (self.neginf, "-inf")) if n]
        rng = f"[{self.lo:.3g}, {self.hi:.3g}]" if self.lo <= self.hi else "no finite value"
        return (f"{self.name + ' ' if self.name else ''}{shape} {self.dtype} in {rng}"
                + (f" with {', '.join(bad)}" if bad else ""))


def summarise(t: torch.Tensor, name: str = "") -> TensorSummary:
    """A ``TensorSummary`` of ``t`` (a few host syncs)."""
    with torch.no_grad():
        x = t.detach()
        if x.is_complex():
            x = x.abs()
        x = x.float()
        finite = torch.isfinite(x)
        vals = x[finite]
        lo, hi = (float(vals.min()), float(vals.max())) if vals.numel() else (math.inf, -math.inf)
        nan, pos, neg = (int(c) for c in torch.stack([torch.isnan(x).sum(), (x == math.inf).sum(),
                                                       (x == -math.inf).sum()]).tolist())
    return TensorSummary(tuple(t.shape), str(t.dtype).removeprefix("torch."), lo, hi, nan, pos, neg, name=name)


@dataclass(frozen=True)
class OpRecord:
    """One traced call that matters: a producer of a non-finite value (forward or backward), a deliberate fill, or a
    non-finite tensor entering the traced code from outside (``op`` "input" or "parameter")."""

    index: int  # order of the call in the trace
    phase: str  # "forward", "backward", "input", "parameter"
    op: str  # "log", "softmax", "SqrtBackward0 of sqrt", ...
    module: str  # the module path (or the class of a module outside the model), "" outside any module
    location: Location | None
    inputs: tuple[TensorSummary, ...]
    output: TensorSummary | None
    made: str  # "NaN", "+inf", "-inf", "inf" (what it produced)
    deliberate: bool = False
    via: "OpRecord | None" = None  # the op that turned this record's Inf into NaN


@dataclass
class _Node:
    record: OpRecord  # the forward call (output finite) that made this autograd node
    node: Any


def _floats(obj: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())]


def _nonfinite_scalar(args: Any, kwargs: Any) -> bool:
    return any(isinstance(v, float) and not math.isfinite(v) for v in tree_flatten((args, kwargs))[0])


def _status(t: torch.Tensor) -> tuple[bool, bool]:
    """(has NaN, has Inf) of ``t``: one host sync when finite, two more when not."""
    with torch.no_grad():
        x = t.detach()
        if x.numel() == 0 or x.layout != torch.strided:
            return False, False
        if bool(torch.isfinite(x).all()):
            return False, False
        return bool(torch.isnan(x).any()), bool(torch.isinf(x).any())


def _made(nan: bool, t: torch.Tensor) -> str:
    if nan:
        return "NaN"
    with torch.no_grad():
        x = t.detach()
        pos, neg = bool((x == math.inf).any()), bool((x == -math.inf).any())
    return "+inf" if pos and not neg else "-inf" if neg and not pos else "inf"


class NonFiniteTracer(TorchFunctionMode):
    """Trace the calls made while active; ``verdict()`` names the producer. ``names``: id(module) -> path, and
    id(parameter) -> name, for the model being traced. ``backward``: hook the autograd nodes the calls make.

    Use as a context manager, or ``start()``/``stop()`` from hooks (the doctor arms it between two steps). Never
    raises into the traced code: an internal error ends the trace (``error``)."""

    def __init__(self, names: dict[int, str] | None = None, backward: bool = True) -> None:
        super().__init__()
        self.names = names or {}
        self.backward = backward
        self.records: list[OpRecord] = []  # producers, deliberate fills and non-finite sources, in order
        self.backward_producer: OpRecord | None = None
        self.error = ""
        self.calls = 0
        self._origins: dict[int, tuple[weakref.ref[torch.Tensor], OpRecord]] = {}
        self._nodes: dict[int, _Node] = {}
        self._stack: list[nn.Module] = []
        self._handles: list[Any] = []
        self._active = False

    # --- lifetime ------------------------------------------------------------------------------------

    def start(self) -> "NonFiniteTracer":
        self._handles = [nn.modules.module.register_module_forward_pre_hook(self._pre),
                         nn.modules.module.register_module_forward_hook(self._post)]
        self._active = True
        self.__enter__()  # type: ignore[no-untyped-call]
        return self

    def stop(self) -> None:
        """Leave the trace: the mode is popped (when it is not on top of the mode stack, the modes above it are left
        in place and it stops recording instead)."""
        if not self._active:
            return
        self._active = False
        for h in self._handles:
            h.remove()
        self._handles = []
        try:
            top = torch._C._get_function_stack_at(torch._C._len_torch_function_stack() - 1)
        except Exception:  # pragma: no cover - torch internals moved
            top = None
        if top is self:
            self.__exit__(None, None, None)
        else:
            self.error = self.error or "the trace was not on top of the torch-function mode stack when it ended"

    def _pre(self, module: nn.Module, _args: Any) -> None:
        self._stack.append(module)

    def _post(self, module: nn.Module, _args: Any, _out: Any) -> None:
        if self._stack and self._stack[-1] is module:
            self._stack.pop()
        elif module in self._stack:
            del self._stack[self._stack.index(module):]

    def module_path(self) -> str:
        for m in reversed(self._stack):
            name = self.names.get(id(m))
            if name is not None:
                return name
        return type(self._stack[-1]).__name__ if self._stack else ""

    # --- the trace -----------------------------------------------------------------------------------

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if not self._active or self.error or (not replaying() and _from_us()):
            return func(*args, **kwargs)
        if name in _SKIP:
            out = func(*args, **kwargs)
            if name in _PASS_ORIGIN and args and isinstance(args[0], torch.Tensor):
                rec = self._origin(args[0])
                if rec is not None:
                    for t in _floats(out):
                        self._set_origin(t, rec)
            return out
        inplace = (name.endswith("_") and not name.endswith("__")) or name in ("__setitem__", "__iadd__", "__isub__",
                                                                               "__imul__", "__itruediv__") \
            or "out" in kwargs
        before: dict[int, tuple[bool, bool]] = {}
        if inplace:
            try:
                before = {id(t): self._status_of(t) for t in _floats(args[:1] if args else ())}
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
        out = func(*args, **kwargs)
        if not self.error:
            try:
                self._inspect(_OP_NAMES.get(name, name), args, kwargs, out, before)
            except Exception as exc:  # a bug of ours ends the trace, never the user's code
                self.error = f"{type(exc).__name__}: {exc}"
        return out

    def _status_of(self, t: torch.Tensor) -> tuple[bool, bool]:
        return _status(t)

    def _origin(self, t: torch.Tensor) -> OpRecord | None:
        known = self._origins.get(id(t))
        return known[1] if known is not None and known[0]() is t else None

    def _set_origin(self, t: torch.Tensor, rec: OpRecord) -> None:
        self._origins[id(t)] = (weakref.ref(t), rec)

    def _inspect(self, op: str, args: Any, kwargs: Any, out: Any, before: dict[int, tuple[bool, bool]]) -> None:
        self.calls += 1
        outs = [t for t in _floats(out)]
        if not outs:
            return
        status = [_status(t) for t in outs]
        bad = [(t, s) for t, s in zip(outs, status) if s[0] or s[1]]
        loc: Location | None = None
        if self.backward and not bad and torch.is_grad_enabled():
            loc = user_location()
            self._hook_nodes(op, args, kwargs, outs, loc)
        if not bad:
            return
        ins = _floats((args, kwargs))
        in_status = [before.get(id(t)) or _status(t) for t in ins]
        in_nan = any(s[0] for s in in_status)
        in_inf = any(s[1] for s in in_status)
        loc = loc or user_location()
        module = self.module_path()
        fill = _nonfinite_scalar(args, kwargs)
        for t, (nan, inf) in bad:
            made = _made(nan, t)
            if (nan and not in_nan) or (inf and not nan and not in_nan and not in_inf):
                # produced here (from inputs without NaN / from finite inputs)
                deliberate = fill and not in_nan and not in_inf
                source: OpRecord | None = None
                if nan and in_inf and not fill:
                    srcs = [self._origin(x) for x, s in zip(ins, in_status) if s[1]]
                    source = next((r for r in srcs if r is not None and r.phase == "forward" and not r.deliberate),
                                  None)
                    if not any(r is not None and r.deliberate for r in srcs) and source is None:
                        source = self._source(ins, in_status)
                rec = OpRecord(len(self.records), "forward", op, module, loc,
                               tuple(summarise(x, self.names.get(id(x), "")) for x in ins), summarise(t), made,
                               deliberate=deliberate)
                if source is not None and op not in _SOFTMAXES:
                    rec = OpRecord(source.index, source.phase, source.op, source.module, source.location,
                                   source.inputs, source.output, source.made, source.deliberate, via=rec)
                self.records.append(rec)
                self._set_origin(t, rec)
            else:
                # inherited: the origin of the first matching non-finite input (or that input itself)
                src = next((self._origin(x) for x, s in zip(ins, in_status) if (s[0] if nan else s[1] or s[0])
                            and self._origin(x) is not None), None)
                if src is None:
                    src = self._source(ins, in_status)
                if src is not None:
                    self._set_origin(t, src)

    def _source(self, ins: list[torch.Tensor], in_status: list[tuple[bool, bool]]) -> OpRecord | None:
        """A non-finite tensor that entered the traced code from outside: a parameter (by name) or an input."""
        for x, s in zip(ins, in_status):
            if (s[0] or s[1]) and self._origin(x) is None:
                pname = self.names.get(id(x))
                phase = "parameter" if pname is not None or isinstance(x, nn.Parameter) else "input"
                rec = OpRecord(len(self.records), phase, phase, self.module_path(), user_location(),
                               (summarise(x, pname or ""),), None, "NaN" if s[0] else "inf")
                self.records.append(rec)
                self._set_origin(x, rec)
                return rec
        return None

    # --- backward ------------------------------------------------------------------------------------

    def _hook_nodes(self, op: str, args: Any, kwargs: Any, outs: list[torch.Tensor], loc: Location | None) -> None:
        stop = {id(t.grad_fn) for t in _floats((args, kwargs)) if t.grad_fn is not None}
        record: OpRecord | None = None
        todo = [t.grad_fn for t in outs if t.grad_fn is not None]
        while todo:
            node = todo.pop()
            if node is None or id(node) in stop or id(node) in self._nodes or type(node).__name__ == "AccumulateGrad":
                continue
            if record is None:
                ins = _floats((args, kwargs))
                record = OpRecord(-1, "backward", op, self.module_path(), loc,
                                  tuple(summarise(x, self.names.get(id(x), "")) for x in ins), None, "")
            self._nodes[id(node)] = _Node(record, node)
            node.register_hook(self._node_hook(node))
            todo.extend(fn for fn, _ in node.next_functions if fn is not None)

    def _node_hook(self, node: Any) -> Any:
        def hook(grad_inputs: tuple[Any, ...], grad_outputs: tuple[Any, ...]) -> None:
            if self.backward_producer is not None or self.error:
                return
            try:
                outs_ok = all(not any(_status(g)) for g in grad_outputs if isinstance(g, torch.Tensor))
                bad = [g for g in grad_inputs if isinstance(g, torch.Tensor) and any(_status(g))]
                if outs_ok and bad:
                    fwd = self._nodes[id(node)].record
                    nan = bool(torch.isnan(bad[0]).any())
                    grads_in = tuple(summarise(g) for g in grad_outputs if isinstance(g, torch.Tensor))
                    self.backward_producer = OpRecord(
                        len(self.records), "backward", f"{fwd.op}", fwd.module, fwd.location, fwd.inputs,
                        summarise(bad[0]), "NaN" if nan else _made(False, bad[0]),
                        via=OpRecord(-1, "backward", type(node).__name__, fwd.module, fwd.location, grads_in,
                                     None, ""))
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"

        return hook

    # --- what it found -------------------------------------------------------------------------------

    def forward_producer(self) -> OpRecord | None:
        """The origin of the first NaN (charged to the Inf it came from, see the module docstring), else the first
        non-deliberate Inf producer, else the first non-finite source (a parameter, an input)."""
        real = [r for r in self.records if not r.deliberate]
        nans = [r for r in real if r.made == "NaN" or (r.via is not None and r.via.made == "NaN")]
        sources = [r for r in real if r.phase in ("parameter", "input")]
        producers = [r for r in real if r.phase == "forward"]
        firsts = [rs[0] for rs in (nans, sources) if rs]
        if firsts:
            return min(firsts, key=lambda r: r.index)
        return producers[0] if producers else None

    def saw_nan(self) -> bool:
        return any(r.made == "NaN" or (r.via is not None and r.via.made == "NaN") for r in self.records
                   if not r.deliberate)


@dataclass
class Verdict:
    """Where a traced step's first non-finite value came from."""

    record: OpRecord | None
    phase: str  # "forward", "backward", "input", "parameter", "loss", ""
    detail: dict[str, Any] = field(default_factory=dict)


def verdict(tracer: NonFiniteTracer) -> Verdict:
    """The trace's answer: a NaN chain in the forward, else a backward producer, else a forward Inf, else a
    non-finite parameter/input; ``Verdict(None, "")`` when the trace saw nothing non-finite."""
    fwd = tracer.forward_producer()
    if fwd is not None and (tracer.saw_nan() or fwd.phase in ("parameter", "input")):
        return Verdict(fwd, fwd.phase)
    if tracer.backward_producer is not None:
        return Verdict(tracer.backward_producer, "backward")
    if fwd is not None:
        return Verdict(fwd, fwd.phase)
    return Verdict(None, "")
