"""The forward tracer: one forward pass under observation, recording what it calls, builds and reads.

``probe_forward`` runs one pass with global module hooks (which modules run, and whether autograd recorded them),
an ``nn.Module.__init__`` recorder (modules and parameters built during the pass, with the user's file:line) and a
``TorchFunctionMode`` that records which tensors the pass reads (and the first function applied to each: a move
such as ``.to(x.device)`` counts) or returns. The model is left exactly as it was (``observe.StateGuard``).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ssdaudit.core.forward_call import call_forward
from ssdaudit.core.errors import ProbeError, UserError, first_line
from ssdaudit.core.frames import user_frame
from ssdaudit.registration.observe import ConstructionRecorder, StateGuard
from ssdaudit.registration.walk import MOVE_FUNCTIONS


@dataclass
class ProbeResult:
    """What one observed forward pass did. Ids are of objects kept alive here or by the model, so none is reused."""

    called: dict[int, nn.Module] = field(default_factory=dict)
    created_at: dict[int, str] = field(default_factory=dict)
    used_tensors: set[int] = field(default_factory=set)  # read by a torch function, or returned by forward
    first_use: dict[int, str] = field(default_factory=dict)  # id(tensor) -> name of the first function applied to it
    added: list[tuple[str, nn.Module]] = field(default_factory=list)  # (name, module) registered during forward()
    with_grad: set[int] = field(default_factory=set)  # modules called while autograd was recording
    created: list[nn.Module] = field(default_factory=list, repr=False)  # keeps created modules alive (stable ids)
    modes: list[str] = field(default_factory=list)  # "train", "eval": the modes that ran
    grad_observed: bool = False  # a pass ran with autograd enabled, so with_grad means something
    # floating tensors (not 0-dim) that existed before the passes and that forward read: id -> (tensor, the module
    # whose forward read it first); the device-move check (R008) asks which of them .to() would leave behind
    preexisting: dict[int, tuple[torch.Tensor, nn.Module]] = field(default_factory=dict, repr=False)
    # id(tensor) -> what the first move applied to it follows: "device" (.to(x.device), .cuda()), "dtype" (.to(x),
    # .type_as(x), .to(device=..., dtype=...)) or "fixed" (.float(), .half(): one dtype whatever the model's)
    move_kind: dict[int, str] = field(default_factory=dict)
    # Parameters (or fresh leaves with requires_grad) made during a pass: id -> (tensor, file:line), kept alive here
    made_params: dict[int, tuple[torch.Tensor, str | None, nn.Module]] = field(default_factory=dict, repr=False)
    param_reads: set[int] = field(default_factory=set)  # made_params read by a torch function after their creation

    def merge(self, other: "ProbeResult") -> None:
        for i, m in other.called.items():
            self.called.setdefault(i, m)
        for i, loc in other.created_at.items():
            self.created_at.setdefault(i, loc)
        self.used_tensors |= other.used_tensors
        for i, name in other.first_use.items():
            self.first_use.setdefault(i, name)
        self.added += other.added
        self.with_grad |= other.with_grad
        self.created += other.created
        self.modes += other.modes
        self.grad_observed = self.grad_observed or other.grad_observed
        for i, pair in other.preexisting.items():
            self.preexisting.setdefault(i, pair)
        for i, kind in other.move_kind.items():
            self.move_kind.setdefault(i, kind)
        for i, made in other.made_params.items():
            self.made_params.setdefault(i, made)
        self.param_reads |= other.param_reads


class ModuleStack:
    """Global module hooks for one pass: the module whose forward runs now (``top``; ``root`` outside any), with a
    callback on each entry. The forward probe and the dtype-move probe (``move_probe``) both trace with it."""

    def __init__(self, root: Any, on_enter: Callable[[nn.Module], None] | None = None) -> None:
        self.stack: list[Any] = [root]
        self.on_enter = on_enter
        self._handles: list[Any] = []

    @property
    def top(self) -> Any:
        return self.stack[-1]

    def _push(self, module: nn.Module, _args: Any) -> None:
        if self.on_enter is not None:
            self.on_enter(module)
        self.stack.append(module)

    def _pop(self, _module: nn.Module, _args: Any, _output: Any) -> None:
        if len(self.stack) > 1:
            self.stack.pop()

    def __enter__(self) -> "ModuleStack":
        self._handles = [nn.modules.module.register_module_forward_pre_hook(self._push),
                         nn.modules.module.register_module_forward_hook(self._pop)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class TensorsMade:
    """The tensors a pass made (by weak reference, so a reused id is never mistaken for one): state that existed
    before the pass is what is *not* in here. ``refs`` may be shared between passes."""

    def __init__(self, refs: dict[int, Any] | None = None) -> None:
        self.refs: dict[int, Any] = refs if refs is not None else {}

    def add(self, t: torch.Tensor) -> None:
        try:
            self.refs[id(t)] = weakref.ref(t)
        except TypeError:  # a tensor subclass without weak references: cannot be cached state anyway
            pass

    def __contains__(self, t: torch.Tensor) -> bool:
        ref = self.refs.get(id(t))
        return ref is not None and ref() is t


class _ReadRecorder(TorchFunctionMode):
    """Records, for one pass, the tensors each torch function reads (the first function applied to each, the
    kind of a move), the floating tensors that existed before the pass, and fresh leaves that ask for gradients."""

    def __init__(self, result: ProbeResult, made: TensorsMade, inputs: set[int], modules: ModuleStack) -> None:
        super().__init__()
        self.result, self.made, self.inputs, self.modules = result, made, inputs, modules

    def __torch_function__(self, func: Any, types_: Any, args: Any = (), kwargs: Any = None) -> Any:
        result = self.result
        name = getattr(func, "__name__", "")
        metadata = name == "__get__"  # .shape, .device, .dtype: a look at the tensor, not a use of its values
        flat = tree_flatten((args, kwargs or {}))[0]
        for k, leaf in enumerate(flat):
            if isinstance(leaf, torch.Tensor) and not metadata:
                if id(leaf) in result.made_params and name != "requires_grad_":
                    result.param_reads.add(id(leaf))
                result.used_tensors.add(id(leaf))
                if id(leaf) not in result.first_use:
                    result.first_use[id(leaf)] = name
                    if k == 0 and name in MOVE_FUNCTIONS:
                        result.move_kind[id(leaf)] = _move_kind(name, flat[1:])
                if (id(leaf) not in result.preexisting and leaf.is_floating_point() and leaf.dim() > 0
                        and id(leaf) not in self.inputs and leaf not in self.made):
                    result.preexisting[id(leaf)] = (leaf, self.modules.top)
        out = func(*args, **(kwargs or {}))
        if (isinstance(out, torch.Tensor) and out.requires_grad and out.grad_fn is None and not metadata
                and id(out) not in result.made_params
                and (name == "requires_grad_" or (kwargs or {}).get("requires_grad") is True)):
            # a fresh leaf that asks for gradients (torch.randn(..., requires_grad=True)): a parameter in all but name
            result.made_params[id(out)] = (out, caller_location(), self.modules.top)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.made.add(t)
        return out


def probe_forward(
    model: nn.Module, example_input: Any, extra_modules: Sequence[nn.Module] = (), grad: bool = False,
    produced: dict[int, Any] | None = None,
) -> ProbeResult:
    """Run one forward pass under observation and leave the model exactly as it was.

    Records every module called (global hooks, and whether autograd was recording), where modules built during the
    pass were created, the tensors the pass reads (and the first function applied to each) or returns. BatchNorm
    statistics (also those of ``extra_modules``, the unregistered ones), RNG state and submodules registered during
    the pass are restored (``observe.StateGuard``). ``grad=False`` runs under ``torch.no_grad()``. Raises
    ``ProbeError`` if forward fails. Module construction is observed by patching ``nn.Module.__init__`` for the
    duration (``observe.ConstructionRecorder``): process-wide, under a lock, recording only this thread's modules,
    so a model built concurrently in another thread is neither recorded nor disturbed.
    ``produced`` (id -> weakref of every tensor made by a pass) is shared between passes, so a cache that one pass
    made is not taken for pre-existing state in the next.
    """
    result = ProbeResult(grad_observed=grad)
    made = TensorsMade(produced)
    inputs = {id(t) for t in tree_flatten(example_input)[0] if isinstance(t, torch.Tensor)}

    def on_call(module: nn.Module) -> None:
        result.called.setdefault(id(module), module)
        if torch.is_grad_enabled():
            result.with_grad.add(id(module))

    modules = ModuleStack(model, on_call)

    def on_module(module: nn.Module) -> None:
        result.created.append(module)
        where = caller_location()
        if where is not None:
            result.created_at.setdefault(id(module), where)

    def on_parameter(parameter: nn.Parameter) -> None:
        result.made_params[id(parameter)] = (parameter, caller_location(), modules.top)
        made.add(parameter)  # made by this pass: not state that existed before it

    guard = StateGuard(model, extra_modules)
    try:
        with modules, guard, ConstructionRecorder(on_module, on_parameter), torch.set_grad_enabled(grad), \
                _ReadRecorder(result, made, inputs, modules):
            output = call_forward(model, example_input)
            # Tensors handed back as they are (priors for the loss) miss .to() as much as those computed with.
            for leaf in tree_flatten(output)[0]:
                if isinstance(leaf, torch.Tensor):
                    result.used_tensors.add(id(leaf))
                    result.first_use.setdefault(id(leaf), "<returned>")
            del output
    except UserError:
        raise
    except Exception as exc:
        raise ProbeError(f"{exc.__class__.__name__}: {first_line(exc)}") from exc
    finally:
        result.added.extend(guard.added)
        for i in guard.added_parameters:  # registered by forward (lazy initialisation): the R010 question, not this one
            result.made_params.pop(i, None)
    return result


def _move_kind(name: str, rest: list[Any]) -> str:
    """What a move of a tensor follows, from the function's name and its other arguments: "dtype" (device and
    dtype: ``.to(x)``, ``.type_as(x)``, ``.to(device, dtype)``), "device" (``.to(x.device)``, ``.cuda()``) or
    "fixed" (``.float()``, ``.to(torch.float16)``: one dtype, whatever the model's)."""
    if name in ("type_as",):
        return "dtype"
    if name in ("cuda", "cpu"):
        return "device"
    if name in ("double", "float", "half", "bfloat16", "type"):
        return "fixed"
    if any(isinstance(a, torch.Tensor) for a in rest):
        return "dtype"
    has_dtype = any(isinstance(a, torch.dtype) for a in rest)
    has_device = any(isinstance(a, (torch.device, str, int)) and not isinstance(a, bool) for a in rest)
    return "dtype" if has_dtype or not has_device and rest else "device"



def caller_location() -> str | None:
    """file:line of the user's frame (``ssdaudit.core.frames``: where a module was constructed)."""
    frame = user_frame(sys._getframe(1))
    return f"{relative_path(frame.f_code.co_filename)}:{frame.f_lineno}" if frame is not None else None


def relative_path(filename: str) -> str:
    """A path relative to the working directory when it lies below it (shorter, stable in reports)."""
    import os

    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel

