"""Process-wide taps on the calls the doctor cannot reach through hooks: ``torch.nn.functional`` losses and dropout,
``clip_grad_norm_``, ``GradScaler``, ``LRScheduler.step`` and ``Module.load_state_dict``.

Each is replaced by a thin wrapper while at least one listener is installed (``install``/``uninstall`` count), and
restored after; ``load_state_dict`` is wrapped for the whole process by ``ssdaudit.training.loads``, which this
module observes. The wrappers call the original first-thing when nobody listens. Loss modules call the functional
losses through ``torch.nn.functional``, so one tap sees both forms.
"""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ssdaudit.training import loads

LOSSES = ("cross_entropy", "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits", "mse_loss",
          "l1_loss", "smooth_l1_loss", "huber_loss", "soft_margin_loss", "poisson_nll_loss")
DROPOUTS = ("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout")
SCALER_METHODS = ("scale", "unscale_", "step", "update")


class Listener(Protocol):
    def tap_loss(self, name: str, input: torch.Tensor, target: Any, options: dict[str, Any]) -> None: ...
    def tap_loss_value(self, name: str, value: torch.Tensor) -> None: ...
    def tap_dropout(self, p: float, training: bool) -> None: ...
    def tap_clip(self, params: list[torch.Tensor], max_norm: float) -> None: ...
    def tap_scaler(self, scaler: Any, method: str, optimizer: Any) -> None: ...
    def tap_load(self, module: nn.Module, strict: bool, result: Any) -> None: ...
    def tap_scheduler(self, scheduler: Any) -> None: ...


_listeners: list[Listener] = []
_saved: list[tuple[Any, str, Any]] = []  # (owner, attribute, original)
_installs = 0

def listen(listener: Listener) -> None:
    install()
    _listeners.append(listener)


def unlisten(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)
        uninstall()


def _patch(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    _saved.append((owner, name, original))
    setattr(owner, name, make(original))


def _call(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``original(*args, **kwargs)`` called from a wrapper here: a warning it raises that would point at this file
    (torch's ``stacklevel=2``) is shown at the user's line that called the wrapper. The warning passes the user's
    filters as usual; only where it is shown changes (``warnings.showwarning`` is wrapped for the call: replacing
    the filters, as ``catch_warnings`` does, would make every "once per location" warning repeat)."""
    shown = warnings.showwarning
    caller = sys._getframe(2)  # the user's frame: _call <- wrapper <- caller

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if filename == __file__:
            filename, lineno, line = caller.f_code.co_filename, caller.f_lineno, None
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        return original(*args, **kwargs)
    finally:
        warnings.showwarning = shown


def _loss(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    sig = inspect.signature(original)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _listeners:
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError:
                return original(*args, **kwargs)
            bound.apply_defaults()
            opts = dict(bound.arguments)
            inp, target = opts.pop("input", None), opts.pop("target", None)
            if isinstance(inp, torch.Tensor):
                for lst in list(_listeners):
                    lst.tap_loss(name, inp, target, opts)
            result = _call(original, *args, **kwargs)
            if isinstance(result, torch.Tensor):
                for lst in list(_listeners):
                    lst.tap_loss_value(name, result)
            return result
        return _call(original, *args, **kwargs)

    return wrapper


def _dropout(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
        for lst in list(_listeners):
            lst.tap_dropout(float(p), bool(training))
        return _call(original, input, p, training, inplace)

    return wrapper


def _clip(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> Any:
        if _listeners:
            params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
            for lst in list(_listeners):
                lst.tap_clip(params, float(max_norm))
            parameters = params
        return _call(original, parameters, max_norm, *args, **kwargs)

    return wrapper


def _scaler(method: str, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not (_listeners and self.is_enabled()):
            return original(self, *args, **kwargs)
        arg = args[0] if args else None
        if method == "update":  # after the step: whether scaler.step skipped the optimizer is known now
            result = original(self, *args, **kwargs)
            for lst in list(_listeners):
                lst.tap_scaler(self, method, arg)
            return result
        for lst in list(_listeners):
            lst.tap_scaler(self, method, arg)
        return original(self, *args, **kwargs)

    return wrapper


def _scheduler_step(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = _call(original, self, *args, **kwargs)
        for lst in list(_listeners):
            lst.tap_scheduler(self)
        return result

    return wrapper


def _observe_load(module: nn.Module, strict: bool, result: Any) -> None:
    for lst in list(_listeners):
        lst.tap_load(module, strict, result)


def install() -> None:
    """Put the taps in place (counted: the last ``uninstall`` restores the originals)."""
    global _installs
    _installs += 1
    if _installs > 1:
        return
    for name in LOSSES:
        if hasattr(F, name):
            _patch(F, name, functools.partial(_loss, name))
    for name in DROPOUTS:
        if hasattr(F, name):
            _patch(F, name, _dropout)
    import torch.nn.utils.clip_grad as clip_grad

    _patch(torch.nn.utils, "clip_grad_norm_", _clip)
    _patch(clip_grad, "clip_grad_norm_", _clip)
    from torch.amp.grad_scaler import GradScaler

    for method in SCALER_METHODS:
        _patch(GradScaler, method, functools.partial(_scaler, method))
    from torch.optim.lr_scheduler import LRScheduler

    _patch(LRScheduler, "step", _scheduler_step)


def uninstall() -> None:
    global _installs
    _installs = max(0, _installs - 1)
    if _installs:
        return
    while _saved:
        owner, name, original = _saved.pop()
        setattr(owner, name, original)


if _observe_load not in loads.observers:
    loads.observers.append(_observe_load)
