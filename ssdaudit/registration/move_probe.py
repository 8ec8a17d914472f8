"""The dtype-move probe: what would ``.cuda()`` leave behind, found on a CPU by really moving a copy.

``model.to(torch.float64)`` walks the same registry as ``model.to("cuda")``: whatever the registry misses keeps
its dtype exactly as it would keep its device. So a deep copy of the model is moved to float64 and run on float64
input; every floating-point tensor that existed before the pass and reaches a torch function still in another
dtype was missed by the move. Such tensors are converted on the fly, so forward runs to the end and every stray
is seen, not just the first one (on a GPU, forward would stop at the first with a device-mismatch error).

``ssdaudit params`` answers the same question (R008) more cheaply inside its forward probe
(``registration.moved_by_to``); this module is the independent check, for tests and for the library.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from ssdaudit.core.forward_call import call_forward
from ssdaudit.core.errors import UserError, first_line
from ssdaudit.registration.model_index import ModelIndex
from ssdaudit.registration.tracer import ModuleStack, TensorsMade
from ssdaudit.registration.walk import MOVE_FUNCTIONS as _MOVES


def first_sample(example_input: Any) -> Any:
    """The input cut to its first sample when every tensor in it shares the same batch size (> 1), else as is."""
    tensors = [t for t in tree_flatten(example_input)[0] if isinstance(t, torch.Tensor)]
    sizes = {t.shape[0] if t.dim() else None for t in tensors}
    if len(sizes) != 1 or None in sizes or sizes == {1} or not tensors:
        return example_input
    return tree_map(lambda t: t[:1] if isinstance(t, torch.Tensor) else t, example_input)


def _overlapping(t: torch.Tensor) -> bool:
    """Elements of ``t`` share memory (a stride-0 view: an expanded tensor, a placeholder weight)."""
    return any(stride == 0 and size > 1 for stride, size in zip(t.stride(), t.shape))


def _views_kept(tensors: list[torch.Tensor]) -> dict[int, Any]:
    """A ``copy.deepcopy`` memo that maps each overlapping tensor to a view of the same memory: deepcopy would clone
    it at its full size (a placeholder embedding of 500,000 x 1,024 to 2 GB). The copy is only moved (``_apply``
    makes new tensors), never written, so sharing that memory changes nothing."""
    memo: dict[int, Any] = {}
    for t in tensors:
        if _overlapping(t):
            view = t.detach()
            memo[id(t)] = nn.Parameter(view, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else view
    return memo


def cast_keeping_layout(t: torch.Tensor, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    """``t.to(dtype, device)`` for a floating tensor (others only move to ``device``), except that a tensor whose
    elements share memory (a stride-0 view) stays such a view of its converted memory instead of being expanded
    to its full size: ``Module.to`` semantics at the memory cost of the storage."""
    if not t.is_floating_point():
        return t.to(device) if device is not None else t
    if not _overlapping(t) or t.numel() == 0:
        return t.to(dtype=dtype, device=device) if device is not None else t.to(dtype)
    extent = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    base = t.as_strided((extent,), (1,))
    moved = base.to(dtype=dtype, device=device) if device is not None else base.to(dtype)
    return moved.as_strided(t.shape, t.stride(), 0)


@dataclass
class DeviceStray:
    """A floating tensor forward read that did not follow the model's move."""

    name: str | None  # its attribute path in the model (registered or not), None when no attribute reaches it
    module: str  # the module whose forward read it ("" for the model itself)
    shape: tuple[int, ...]
    dtype: torch.dtype
    first_use: str  # the first torch function applied to it

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class MoveProbeResult:
    strays: list[DeviceStray]
    error: str | None = None  # why the check could not run (meta tensors, deepcopy or forward failed)


def find_device_strays(model: nn.Module, example_input: Any, dtype: torch.dtype = torch.float64,
                       device: torch.device | str | None = None) -> MoveProbeResult:
    """Move a deep copy of ``model`` with ``.to(dtype)`` (and ``device``), run forward in eval mode on the input
    converted likewise, and return every pre-existing floating tensor that forward read in another dtype/device.

    The model itself is not touched. Tensors of 0 dimensions are ignored: they mix with tensors on any device.
    """
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.is_meta for t in tensors):
        return MoveProbeResult([], "the model is on the meta device")
    try:
        moved = copy.deepcopy(model, _views_kept(tensors))
    except Exception as exc:  # locks, generators, handles: objects that refuse to be copied
        return MoveProbeResult([], f"the model cannot be deep-copied ({exc.__class__.__name__})")
    target = torch.device(device) if device is not None else None
    # what ``.to(dtype, device)`` does (through the model's own ``_apply``), keeping a stride-0 placeholder weight
    # (``placeholder.placeholder_copy``) a view rather than expanding it to its full size
    try:
        moved._apply(lambda t: cast_keeping_layout(t, dtype, target))  # type: ignore[no-untyped-call]
    except UserError:
        raise
    except Exception as exc:  # out of memory (a budget's limit), a custom _apply that raises
        return MoveProbeResult([], f"moving the copy failed: {exc.__class__.__name__}: {first_line(exc, 200)}")
    moved.eval()

    index = ModelIndex.of(moved)  # one walk of the copy names its tensors and modules, registered or not
    names, module_names = index.tensor_names, index.member_module_names

    inputs = tree_map(lambda t: _converted(t, dtype, target), example_input)
    modules = ModuleStack(None)
    recorder = _StrayRecorder(dtype, target, names, module_names, modules,
                              {id(t) for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor)})
    rng = torch.random.get_rng_state()
    try:
        with torch.no_grad(), modules, recorder:
            call_forward(moved, inputs)
    except UserError:
        raise
    except Exception as exc:
        return MoveProbeResult(recorder.strays(), f"forward failed: {exc.__class__.__name__}: {first_line(exc, 200)}")
    finally:
        torch.random.set_rng_state(rng)
    return MoveProbeResult(recorder.strays())


def _converted(t: Any, dtype: torch.dtype, target: torch.device | None) -> Any:
    if isinstance(t, torch.Tensor) and t.is_floating_point():
        return t.to(dtype=dtype, device=target) if target is not None else t.to(dtype)
    return t


class _StrayRecorder(TorchFunctionMode):
    """Records every pre-existing floating tensor a torch function reads in another dtype (or device) than the
    moved model's, converting it on the fly so forward runs on to the next one."""

    def __init__(self, dtype: torch.dtype, target: torch.device | None, names: dict[int, str],
                 module_names: dict[int, str], modules: ModuleStack, input_ids: set[int]) -> None:
        super().__init__()
        self.dtype, self.target, self.names, self.module_names = dtype, target, names, module_names
        self.modules, self.input_ids = modules, input_ids
        self.made = TensorsMade()  # tensors made during the pass
        self.found: dict[int, tuple[torch.Tensor, DeviceStray]] = {}  # keeps each stray alive: its id stays unique
        # a stray passed through a move that did not reach ``dtype`` (``.to(x.device)``): id(result) -> (result, the
        # stray's record, the stray); it counts as a stray read when the result is read, and not when a later move
        # converts it
        self.pending: dict[int, tuple[torch.Tensor, DeviceStray, torch.Tensor]] = {}

    def strays(self) -> list[DeviceStray]:
        return [s for _, s in self.found.values()]

    def _reader(self) -> str:
        top = self.modules.top
        return "" if top is None else self.module_names.get(id(top), type(top).__name__)

    def _is_stray(self, t: torch.Tensor) -> bool:
        if not t.is_floating_point() or t.dim() == 0:
            return False
        if t.dtype == self.dtype and (self.target is None or t.device == self.target):
            return False
        return id(t) not in self.input_ids and t not in self.made

    def __torch_function__(self, func: Any, types_: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        flat, spec = tree_flatten((args, kwargs or {}))
        changed = False
        moving: tuple[torch.Tensor, DeviceStray] | None = None  # a stray handed to a move: judged by its result
        for k, leaf in enumerate(flat):
            if not isinstance(leaf, torch.Tensor):
                continue
            is_move = k == 0 and name in _MOVES
            record: DeviceStray | None = None
            source = leaf
            if id(leaf) in self.pending and self.pending[id(leaf)][0] is leaf:
                _, record, source = self.pending[id(leaf)]
            elif self._is_stray(leaf):
                record = DeviceStray(self.names.get(id(leaf)), self._reader(), tuple(leaf.shape), leaf.dtype, name)
            if record is not None and id(source) not in self.found:
                if is_move:
                    moving = (source, record)
                else:
                    self.found[id(source)] = (source, record)
            if leaf.is_floating_point() and leaf.dtype != self.dtype and not is_move:
                flat[k] = _converted(leaf, self.dtype, self.target)  # keep forward going past this stray
                changed = True
        if changed:
            args, kwargs = tree_unflatten(flat, spec)
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.made.add(t)
        if moving is not None and isinstance(out, torch.Tensor):
            if out.is_floating_point() and out.dtype != self.dtype or (self.target is not None and out.device != self.target):
                self.pending[id(out)] = (out, moving[1], moving[0])  # still astray: its next read decides
        return out
