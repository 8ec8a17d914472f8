"""Taps on the calls the doctor cannot reach through hooks: ``torch.nn.functional`` losses and dropout,
``clip_grad_norm_``, ``GradScaler``, ``LRScheduler.step`` and ``Module.load_state_dict`` (``ssdaudit.training.loads``).

Each is a layer of the patch owner (``ssdaudit.core.patches``: counted, locked, restored by identity, never
compiled) while at least one listener is installed (``install``/``uninstall`` count). Loss modules call the
functional losses through ``torch.nn.functional``, so one tap sees both forms.

A tap reaches the listeners of the calling thread (a second training loop in another thread has its own watch);
a thread that has none reaches them all (a watch made in one thread for a loop in another). A listener that raises
is told through ``tap_failed`` (never the user's code). While the taps are in place, ``warnings._showwarnmsg`` has
one layer too: a torch warning raised inside a tapped call (which would point at our file) is shown at the user's
line instead, and torch's warning that *our* global module hooks fire an extra time for a compiled module is
dropped (only while every global module hook is ours).
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
import warnings
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ssdaudit.core import patches
from ssdaudit.core.frames import is_library, user_frame
from ssdaudit.core.guard import raise_internal
from ssdaudit.training import loads

LOSSES = ("cross_entropy", "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits", "mse_loss",
          "l1_loss", "smooth_l1_loss", "huber_loss", "soft_margin_loss", "poisson_nll_loss", "kl_div")
DROPOUTS = ("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout")
SCALER_METHODS = ("scale", "unscale_", "step", "update")

patches.register("torch.nn.functional", *LOSSES, *DROPOUTS)
patches.register("torch.nn.utils", "clip_grad_norm_")
patches.register("torch.nn.utils.clip_grad", "clip_grad_norm_")
patches.register("torch.amp.grad_scaler.GradScaler", *SCALER_METHODS)
patches.register("torch.optim.lr_scheduler.LRScheduler", "step")
patches.register("warnings", "_showwarnmsg")

_PACKAGE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + os.sep
_COMPILE_HOOK_WARNING = "Using `torch.compile(module)` when there are global hooks"


class Listener(Protocol):
    def tap_loss(self, name: str, input: torch.Tensor, target: Any, options: dict[str, Any]) -> None: ...
    def tap_loss_value(self, name: str, value: Any) -> None: ...
    def tap_dropout(self, p: float, training: bool) -> None: ...
    def tap_clip(self, params: list[torch.Tensor], max_norm: float) -> None: ...
    def tap_scaler(self, scaler: Any, method: str, optimizer: Any) -> None: ...
    def tap_load(self, module: nn.Module, strict: bool, result: Any) -> None: ...
    def tap_scheduler(self, scheduler: Any) -> None: ...
    def tap_failed(self, method: str, exc: Exception) -> None: ...


_LOCK = threading.RLock()
_listeners: tuple[tuple[Listener, int], ...] = ()  # (listener, its thread); replaced, never mutated
_handles: list[patches.Handle] = []
_installs = 0
# ids of the global module hooks the doctor registered (torch's compiled-module warning is ours while only these)
our_global_hooks: set[int] = set()


def listen(listener: Listener, thread: int | None = None) -> None:
    """Install the taps (counted) and send their calls to ``listener``, which belongs to ``thread`` (default: the
    calling thread)."""
    global _listeners
    with _LOCK:
        install()
        _listeners = (*_listeners, (listener, thread if thread is not None else threading.get_ident()))


def unlisten(listener: Listener) -> None:
    global _listeners
    with _LOCK:
        if any(lst is listener for lst, _ in _listeners):
            _listeners = tuple((lst, t) for lst, t in _listeners if lst is not listener)
            uninstall()


def owns_thread(listener: object, thread: int) -> bool:
    """Whether events of ``thread`` belong to ``listener``: it was made in that thread, or no listener was."""
    current = _listeners
    if len(current) == 1:  # the common case, on every forward call: one watch
        return current[0][1] != thread or current[0][0] is listener
    mine = [lst for lst, t in current if t == thread]
    return not mine or any(lst is listener for lst in mine)


def current() -> list[Listener]:
    """The listeners a tap called from this thread reaches."""
    every = _listeners
    thread = threading.get_ident()
    mine = [lst for lst, t in every if t == thread]
    return mine or [lst for lst, _ in every]


def _notify(listeners: list[Listener], method: str, *args: Any) -> None:
    for lst in listeners:
        try:
            getattr(lst, method)(*args)
        except Exception as exc:  # a bug of ours: the listener notes it, the user's call goes on
            if raise_internal():
                raise
            try:
                lst.tap_failed(method, exc)
            except Exception:  # pragma: no cover - the note itself failed: nothing more to do safely
                pass


def _loss(name: str) -> patches.Make:
    def make(call_next: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(call_next)

        @functools.wraps(call_next)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            listeners = current()
            if listeners:
                try:
                    bound = sig.bind(*args, **kwargs)
                except TypeError:  # the user's mistake: the original raises it as usual
                    return call_next(*args, **kwargs)
                bound.apply_defaults()
                opts = dict(bound.arguments)
                inp, target = opts.pop("input", None), opts.pop("target", None)
                if isinstance(inp, torch.Tensor):
                    _notify(listeners, "tap_loss", name, inp, target, opts)
                    value = call_next(*args, **kwargs)
                    if isinstance(value, torch.Tensor):
                        _notify(listeners, "tap_loss_value", name, value)
                    return value
            return call_next(*args, **kwargs)

        return wrapper

    return make


def _dropout(call_next: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call_next)
    def wrapper(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
        listeners = current()
        if listeners:
            _notify(listeners, "tap_dropout", float(p), bool(training))
        return call_next(input, p, training, inplace)

    return wrapper


def _clip(call_next: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call_next)
    def wrapper(parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> Any:
        listeners = current()
        if listeners:
            params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
            _notify(listeners, "tap_clip", params, float(max_norm))
            parameters = params
        return call_next(parameters, max_norm, *args, **kwargs)

    return wrapper


def _scaler(method: str) -> patches.Make:
    def make(call_next: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call_next)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            listeners = current()
            if not (listeners and self.is_enabled()):
                return call_next(self, *args, **kwargs)
            arg = args[0] if args else None
            if method == "update":  # after the step: whether scaler.step skipped the optimizer is known now
                result = call_next(self, *args, **kwargs)
                _notify(listeners, "tap_scaler", self, method, arg)
                return result
            _notify(listeners, "tap_scaler", self, method, arg)
            return call_next(self, *args, **kwargs)

        return wrapper

    return make


def _scheduler_step(call_next: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call_next)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = call_next(self, *args, **kwargs)
        listeners = current()
        if listeners:
            _notify(listeners, "tap_scheduler", self)
        return result

    return wrapper


def _only_our_global_hooks() -> bool:
    module = nn.modules.module
    hooks = [h for d in (module._global_backward_pre_hooks, module._global_backward_hooks,
                         module._global_forward_pre_hooks, module._global_forward_hooks) for h in d.values()]
    return bool(hooks) and all(id(h) in our_global_hooks for h in hooks)


def _show_warning(call_next: Callable[..., Any]) -> Callable[..., Any]:
    """A layer on ``warnings._showwarnmsg`` (what both showing and recording a warning go through, also inside
    ``catch_warnings(record=True)``): a warning attributed to a file of ssdaudit (torch's ``stacklevel=2`` from a
    tapped call) is shown at the user's line; torch's compiled-module warning caused only by our hooks is dropped.
    The warning passes the user's filters as usual (only where it is shown changes)."""

    @functools.wraps(call_next)
    def _showwarnmsg(msg: Any) -> Any:
        try:
            if str(getattr(msg, "message", "")).startswith(_COMPILE_HOOK_WARNING) and _only_our_global_hooks():
                return None
            filename = getattr(msg, "filename", "") or ""
            if filename.startswith(_PACKAGE) or (filename and os.path.realpath(filename).startswith(_PACKAGE)):
                frame = user_frame()
                if frame is not None and not is_library(frame.f_code.co_filename):
                    msg.filename, msg.lineno, msg.line = frame.f_code.co_filename, frame.f_lineno, None
        except Exception:
            if raise_internal():
                raise
        return call_next(msg)

    return _showwarnmsg


def _observe_load(module: nn.Module, strict: bool, result: Any) -> None:
    listeners = current()
    if listeners:
        _notify(listeners, "tap_load", module, strict, result)


def install() -> None:
    """Put the taps in place (counted: the last ``uninstall`` takes them out again)."""
    global _installs
    with _LOCK:
        _installs += 1
        if _installs > 1:
            return
        import torch.nn.utils.clip_grad as clip_grad
        from torch.amp.grad_scaler import GradScaler
        from torch.optim.lr_scheduler import LRScheduler

        plan: list[tuple[Any, str, patches.Make, bool]] = []
        plan += [(F, name, _loss(name), True) for name in LOSSES if hasattr(F, name)]
        plan += [(F, name, _dropout, True) for name in DROPOUTS if hasattr(F, name)]
        plan += [(torch.nn.utils, "clip_grad_norm_", _clip, True), (clip_grad, "clip_grad_norm_", _clip, True)]
        plan += [(GradScaler, method, _scaler(method), True) for method in SCALER_METHODS]
        plan += [(LRScheduler, "step", _scheduler_step, True), (warnings, "_showwarnmsg", _show_warning, False)]
        try:
            for owner, name, make, compile_safe in plan:
                _handles.append(patches.patch(owner, name, make, key=f"ssdaudit.taps.{getattr(owner, '__name__', '')}.{name}",
                                              compile_safe=compile_safe))
            _handles.append(loads.record_loads())
            if _observe_load not in loads.observers:
                loads.observers.append(_observe_load)
        except BaseException:
            _installs = 1
            uninstall()
            raise


def uninstall() -> None:
    global _installs
    with _LOCK:
        _installs = max(0, _installs - 1)
        if _installs:
            return
        if _observe_load in loads.observers:
            loads.observers.remove(_observe_load)
        while _handles:
            _handles.pop().release()
