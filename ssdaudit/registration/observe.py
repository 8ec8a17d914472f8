"""Watching one forward pass without changing the model: who constructs modules during it, and putting the
model's state (buffers, RNG, submodules registered during the pass) back afterwards.

``probe_forward`` composes these with its read tracer; each has one job and can be tested on its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ssdaudit.core import patches

patches.register("torch.nn.modules.module.Module", "__init__")
patches.register("torch.nn.parameter.Parameter", "__new__")

# One patch of nn.Module.__init__ at a time, process-wide: a probe in another thread waits for this one.
_PATCH_LOCK = threading.RLock()


class ConstructionRecorder:
    """While active, every ``nn.Module`` constructed *on this thread* is passed to ``on_module(module)``, and
    every ``nn.Parameter`` to ``on_parameter(parameter)`` when that is given.

    ``nn.Module.__init__`` (and ``nn.Parameter.__new__``) are patched process-wide for the duration (torch offers
    no construction hook; through ``ssdaudit.core.patches``), under a lock, so two probes never patch at once. Objects that other threads construct
    meanwhile are built normally and not recorded: the recorder compares the constructing thread with its own.
    """

    def __init__(self, on_module: Callable[[nn.Module], None],
                 on_parameter: Callable[[nn.Parameter], None] | None = None) -> None:
        self.on_module = on_module
        self.on_parameter = on_parameter
        self._handles: list[patches.Handle] = []
        self._thread = threading.get_ident()

    def __enter__(self) -> "ConstructionRecorder":
        _PATCH_LOCK.acquire()
        thread, on_module, on_parameter = self._thread, self.on_module, self.on_parameter

        def make_init(call_next: Callable[..., None]) -> Callable[..., None]:
            def recording_init(module: nn.Module, *args: Any, **kwargs: Any) -> None:
                call_next(module, *args, **kwargs)
                if threading.get_ident() == thread:
                    on_module(module)

            return recording_init

        def make_new(call_next: Callable[..., Any]) -> Callable[..., Any]:
            def recording_new(cls: type, data: Any = None, requires_grad: bool = True) -> Any:
                parameter: Any = call_next(cls, data, requires_grad)
                if threading.get_ident() == thread and isinstance(parameter, nn.Parameter) and on_parameter:
                    on_parameter(parameter)
                return parameter

            return recording_new

        try:
            self._handles.append(patches.patch(nn.Module, "__init__", make_init, compile_safe=False))
            if on_parameter is not None:
                self._handles.append(patches.patch(nn.Parameter, "__new__", make_new, compile_safe=False))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            while self._handles:
                self._handles.pop().release()
        finally:
            _PATCH_LOCK.release()


class StateGuard:
    """Saves what a forward pass may change and puts it back on exit: the buffers' values (BatchNorm running
    statistics) and the buffer and parameter dicts of every module of ``models``, the CPU and CUDA RNG states, and submodules
    registered on the model during the pass (removed again, and listed in ``added`` as (dotted name, module))."""

    def __init__(self, model: nn.Module, extra: Sequence[nn.Module] = ()) -> None:
        self.model = model
        self.extra = tuple(extra)
        self.added: list[tuple[str, nn.Module]] = []
        self.added_parameters: set[int] = set()  # ids of parameters registered during the pass (then removed)

    def __enter__(self) -> "StateGuard":
        roots = (self.model, *self.extra)
        self._before = dict(self.model.named_modules())
        self._before_ids = {id(m) for m in self._before.values()}
        owners = list({id(m): m for e in roots for m in e.modules()}.values())
        self._buffer_dicts = [(m, dict(m._buffers)) for m in owners]  # forward may replace or add buffers
        self._param_dicts = [(m, dict(m._parameters)) for m in owners]  # ... or assign a Parameter to an attribute
        self._module_dicts = [(m, dict(m._modules)) for m in owners]  # ... or add or swap submodules
        self._states = [b for m in roots for b in m.buffers()]
        self._saved = [b.detach().clone() for b in self._states]
        self._rng = torch.random.get_rng_state()
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
        self._cuda_rng = torch.cuda.get_rng_state_all() if cuda else None
        return self

    def __exit__(self, *exc: object) -> None:
        for m, buffers in self._buffer_dicts:
            if m._buffers.keys() != buffers.keys() or any(m._buffers[k] is not v for k, v in buffers.items()):
                m._buffers.clear()
                m._buffers.update(buffers)
        for m, params in self._param_dicts:
            self.added_parameters.update(id(p) for k, p in m._parameters.items() if p is not None and params.get(k) is not p)
            if m._parameters.keys() != params.keys() or any(m._parameters[k] is not v for k, v in params.items()):
                m._parameters.clear()
                m._parameters.update(params)
        with torch.no_grad():
            for b, saved in zip(self._states, self._saved):
                if b.shape == saved.shape:
                    b.copy_(saved)
        torch.random.set_rng_state(self._rng)
        if self._cuda_rng is not None:
            torch.cuda.set_rng_state_all(self._cuda_rng)
        # submodules registered during the pass are listed and taken out again; one that replaced a submodule (an
        # attention implementation swapped on the first call) gives its place back to the one it replaced
        names = {id(m): n for n, m in self._before.items()}
        for m, modules in self._module_dicts:
            if m._modules.keys() == modules.keys() and all(m._modules[k] is v for k, v in modules.items()):
                continue
            prefix = names.get(id(m))
            for attr, module in m._modules.items():
                if module is not None and modules.get(attr) is not module and id(module) not in self._before_ids \
                        and prefix is not None:
                    self.added.append((f"{prefix}.{attr}" if prefix else attr, module))
            m._modules.clear()
            m._modules.update(modules)
