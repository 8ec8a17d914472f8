"""The torch calls ``ssdaudit resume`` observes that no hook reaches: ``torch.save`` and DCP's ``save`` (a copy of
the checkpoint), ``Tensor.backward`` (the loss), ``GradScaler.scale`` (the scaler and the unscaled loss) and
``DataLoader.__iter__`` (where an epoch's data order is drawn).

Everything here is patched only inside ``observing(listener)``, through the one owner of patches
(``ssdaudit.core.patches``), and restored by identity when it ends (nested uses are counted). Each wrapper calls the original first or last as the call needs and never raises into the user's code:
a listener that fails is recorded in ``errors`` and the call goes on. Nothing is patched at import.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from ssdaudit.core import patches as core_patches

core_patches.register("torch", "save")
core_patches.register("torch.serialization", "save")
core_patches.register("torch.Tensor", "backward")
core_patches.register("torch.amp.grad_scaler.GradScaler", "scale")
core_patches.register("torch.utils.data.DataLoader", "__iter__")
core_patches.register("torch.utils.data.dataloader._BaseDataLoaderIter", "__next__")
core_patches.register("torch.distributed.checkpoint", "save")
core_patches.register("torch.distributed.checkpoint.state_dict_saver", "save")


class SaveListener(Protocol):
    def on_save(self, obj: Any, target: Any, kind: str) -> None: ...
    def on_backward(self, tensor: torch.Tensor) -> None: ...
    def on_scale(self, scaler: Any, value: Any) -> None: ...
    def on_loader_iter(self, loader: Any) -> None: ...
    def on_batch(self, loader: Any) -> None: ...


_lock = threading.RLock()
_listeners: list[SaveListener] = []
_handles: list[core_patches.Handle] = []  # our layers, through the one owner of patches (ssdaudit.core.patches)
_below_save: list[Callable[..., Any]] = []  # torch.save below our layer: a save of ours that is not observed
errors: list[str] = []
_busy = threading.local()  # a save made by a listener itself (the copy) is not observed again


def original_save() -> Callable[..., Any]:
    """``torch.save`` as torch defines it (the copy of a checkpoint is written with it, unobserved)."""
    return _below_save[0] if _below_save else torch.save


def _notify(method: str, *args: Any) -> None:
    if getattr(_busy, "on", False):
        return
    _busy.on = True
    try:
        for lst in list(_listeners):
            try:
                getattr(lst, method)(*args)
            except Exception as exc:  # a bug of ours never reaches the user's training
                import os

                if os.environ.get("SSDAUDIT_RAISE_INTERNAL", "") not in ("", "0"):
                    raise
                errors.append(f"{type(lst).__name__}.{method}: {exc!r}\n{traceback.format_exc()}")
    finally:
        _busy.on = False


def _save(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(obj, f, *args, **kwargs)
        _notify("on_save", obj, f, "torch.save")
        return result

    return save


def _dcp_save(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def save(state_dict: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(state_dict, *args, **kwargs)
        target = kwargs.get("checkpoint_id")
        writer = kwargs.get("storage_writer")
        if target is None and writer is not None:
            target = getattr(writer, "path", None)
        _notify("on_save", state_dict, target, "dcp")
        return result

    return save


def _backward(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def backward(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        _notify("on_backward", self)
        return original(self, *args, **kwargs)

    return backward


def _scale(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def scale(self: Any, outputs: Any) -> Any:
        _notify("on_scale", self, outputs)
        return original(self, outputs)

    return scale


def _loader_iter(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def __iter__(self: Any) -> Any:
        _notify("on_loader_iter", self)
        it = original(self)
        try:
            it._ssdaudit_loader = self  # which loader a batch came from (on_batch)
        except AttributeError:
            pass
        return it

    return __iter__


def _loader_next(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def __next__(self: Any) -> Any:
        batch = original(self)
        _notify("on_batch", getattr(self, "_ssdaudit_loader", None))
        return batch

    return __next__


def _patch(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
    _handles.append(core_patches.patch(owner, name, make, key="ssdaudit.resume"))


def _save_below(make: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def keep(call_next: Any) -> Any:
        _below_save.append(call_next)
        return make(call_next)

    return keep


def _install() -> None:
    from torch.amp.grad_scaler import GradScaler
    from torch.utils.data import DataLoader

    serialization = importlib.import_module("torch.serialization")
    also_serialization = getattr(serialization, "save", None) is torch.save
    _patch(torch, "save", _save_below(_save))
    if also_serialization:
        _patch(serialization, "save", _save)
    _patch(torch.Tensor, "backward", _backward)
    _patch(GradScaler, "scale", _scale)
    _patch(DataLoader, "__iter__", _loader_iter)
    from torch.utils.data.dataloader import _BaseDataLoaderIter

    _patch(_BaseDataLoaderIter, "__next__", _loader_next)
    dcp = sys.modules.get("torch.distributed.checkpoint")
    if dcp is None and torch.distributed.is_available():
        try:  # a script imports it after the run began: its ``save`` must already be ours
            dcp = importlib.import_module("torch.distributed.checkpoint")
        except Exception:  # an incomplete build: DCP saves are not observed
            dcp = None
    if dcp is not None and hasattr(dcp, "save"):
        saver = sys.modules.get("torch.distributed.checkpoint.state_dict_saver")
        original = dcp.save
        _patch(dcp, "save", _dcp_save)
        if saver is not None and getattr(saver, "save", None) is original:
            _patch(saver, "save", _dcp_save)


def _uninstall() -> None:
    while _handles:
        _handles.pop().release()  # restored by identity, in any order, by the owner of patches
    _below_save.clear()


@contextlib.contextmanager
def observing(listener: SaveListener) -> Iterator[None]:
    """Patch the calls above while the block runs, reporting them to ``listener``; restored after."""
    with _lock:
        if not _listeners:
            _install()
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)
            if not _listeners:
                _uninstall()
