"""The one owner of every patch ssdaudit makes to torch, the standard library or a user's object.

ssdaudit runs inside other people's processes, so whatever it replaces must be put back exactly, whoever else
patched the same attribute and in whatever order the patches end. Every replacement goes through ``patch``:

* **layered, by identity.** The first patch of an attribute stores its original value (as stored: a
  ``staticmethod`` stays one) and puts one *dispatcher* in its place; each ``patch`` adds a *layer* (a wrapper made
  by ``make(call_next)``) to that attribute's stack. A call runs the layers newest first, each calling the next
  through ``call_next``, the last the original. Releasing a layer takes it out of the stack wherever it sits; the
  last release puts the original back (when the attribute still holds our dispatcher: a patch someone else put
  over ours is left in place, and our dispatcher under it just calls the original from then on).
* **reference-counted.** ``patch(..., key=K)`` while a layer with key ``K`` is active on that attribute adds a
  reference to it instead of a second layer; the layer goes when its last holder releases it.
* **locked.** One ``threading.RLock`` guards the registry; calls through a dispatcher read an immutable tuple of
  layers and take no lock.
* **listed.** ``active()`` names every patch in place (what ``ssdaudit watch`` holds, what a test checks).
* **never compiled.** Dispatchers of torch callables are wrapped in ``torch.compiler.disable`` (``compile_safe``):
  a compiled model or training step runs our wrappers eagerly, at a graph break, instead of tracing into them.

Nothing here is done at import; importing this module imports neither torch nor anything of ssdaudit.

Use::

    handle = patches.patch(torch, "save", lambda call_next: my_wrapper_around(call_next), key="resume-audit")
    ...
    handle.release()          # or: with patches.patched(torch, "save", make, key=...): ...
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

_LOCK = threading.RLock()

Make = Callable[[Callable[..., Any]], Callable[..., Any]]


@dataclass(frozen=True)
class ActivePatch:
    """One patch in place: ``owner_name.attribute`` (e.g. ``torch.nn.functional.cross_entropy``), the layers' keys
    (newest first) and how many holders each has."""

    target: str
    attribute: str
    layers: tuple[tuple[str, int], ...]


class _Layer:
    __slots__ = ("key", "wrapper", "refs", "slot")

    def __init__(self, key: str, slot: "_Slot") -> None:
        self.key = key
        self.slot = slot
        self.refs = 1
        self.wrapper: Callable[..., Any] = _missing


def _missing(*_args: Any, **_kwargs: Any) -> Any:  # pragma: no cover - replaced before any call
    raise RuntimeError("ssdaudit patch layer called before it was built")


class _Slot:
    """One patched attribute: its original (as stored), the dispatcher in its place, the layers (oldest first)."""

    def __init__(self, owner: Any, name: str, compile_safe: bool) -> None:
        self.owner = owner
        self.name = name
        self.had_own = name in _own_dict(owner)
        raw = _own_dict(owner)[name] if self.had_own else getattr(owner, name)
        self.raw = raw  # restored as is
        # the callable the innermost layer calls: a staticmethod/classmethod stored on a class is called unwrapped
        self.kind: type | None = type(raw) if isinstance(raw, (staticmethod, classmethod)) else None
        self.original: Callable[..., Any] = raw.__func__ if self.kind is not None else raw
        self.layers: tuple[_Layer, ...] = ()  # oldest first; replaced, never mutated (calls read it without the lock)
        self.installed: Any = None
        self.dispatcher = self._make_dispatcher(compile_safe)

    def _make_dispatcher(self, compile_safe: bool) -> Callable[..., Any]:
        slot = self

        def dispatch(*args: Any, **kwargs: Any) -> Any:
            layers = slot.layers
            if not layers:
                return slot.original(*args, **kwargs)
            return layers[-1].wrapper(*args, **kwargs)

        functools.update_wrapper(dispatch, self.original)
        dispatch.__ssdaudit_patch__ = True  # type: ignore[attr-defined]
        if compile_safe:
            dispatch = compile_disabled(dispatch)
        return dispatch

    def call_below(self, layer: _Layer) -> Callable[..., Any]:
        """The callable a layer calls next: the layer under it at call time, else the original."""
        slot = self

        def call_next(*args: Any, **kwargs: Any) -> Any:
            layers = slot.layers
            try:
                at = layers.index(layer)
            except ValueError:  # released while a call was in flight, or out of the stack: go straight through
                return slot.original(*args, **kwargs)
            return layers[at - 1].wrapper(*args, **kwargs) if at else slot.original(*args, **kwargs)

        functools.update_wrapper(call_next, self.original)  # inspect.signature(call_next) is the original's
        return call_next

    def install(self) -> None:
        value = self.dispatcher if self.kind is None else self.kind(self.dispatcher)
        setattr(self.owner, self.name, value)
        self.installed = value

    def ours_on_top(self) -> bool:
        return _own_dict(self.owner).get(self.name, _ABSENT) is self.installed

    def restore(self) -> None:
        if not self.ours_on_top():
            return  # someone patched over us: theirs stays; our dispatcher now calls the original
        if self.had_own:
            setattr(self.owner, self.name, self.raw)
        else:
            delattr(self.owner, self.name)

    def describe(self) -> ActivePatch:
        owner = self.owner
        target = getattr(owner, "__module__", "") + "." + owner.__qualname__ if isinstance(owner, type) else (
            owner.__name__ if hasattr(owner, "__spec__") and hasattr(owner, "__name__")
            else f"<{type(owner).__name__} at {id(owner):#x}>")
        return ActivePatch(target, self.name, tuple((layer.key, layer.refs) for layer in reversed(self.layers)))


_ABSENT = object()
_slots: dict[tuple[int, str], _Slot] = {}


def _own_dict(owner: Any) -> Any:
    return owner.__dict__ if hasattr(owner, "__dict__") else {}


def compile_disabled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compiler.disable(fn)`` where torch is imported (patches of torch callables, hooks), else ``fn``: a
    compiled model or step calls it eagerly, at a graph break, instead of tracing into it."""
    torch = sys.modules.get("torch")
    compiler = getattr(torch, "compiler", None)
    disable = getattr(compiler, "disable", None)
    if disable is None:
        return fn
    wrapped: Callable[..., Any] = disable(fn, recursive=True)
    for attr in ("__ssdaudit_patch__", "__wrapped__", "__name__", "__qualname__", "__doc__"):
        if hasattr(fn, attr):
            try:
                setattr(wrapped, attr, getattr(fn, attr))
            except (AttributeError, TypeError):  # pragma: no cover - a builtin-like wrapper
                pass
    return wrapped


def skip_tracing(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` itself, marked so that dynamo never traces it (``torch._dynamo.decorators.skip``: a call of it in
    compiled code is a graph break, and it runs as it is). Only for functions that call nothing of Python in a
    compiled region (``compile_skipped`` for the others). Unchanged where torch has no dynamo."""
    try:
        from torch._dynamo.decorators import skip
    except ImportError:  # pragma: no cover - a torch without dynamo
        return fn
    marked: Callable[..., Any] = skip(fn)
    return marked


def compile_skipped(fn: Callable[..., Any], on_error: Callable[[Exception], Any] | None = None) -> Callable[..., Any]:
    """``fn`` for a hook on a hot path (every module call, every parameter's gradient): in eager code a direct call
    (``compile_disabled``'s wrapper costs several microseconds a call, thousands of calls a step); code of a
    compiled region (``torch.compile``'s frame callback is set: code run after a graph break) calls it through
    ``compile_disabled``, so that dynamo compiles nothing it calls. Dynamo never traces the returned function itself
    (``skip_tracing``). ``on_error``: an ``Exception`` from ``fn`` is passed to it and its result returned (one
    frame less than a wrapper of ``fn`` that catches)."""
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if on_error is None:
                raise
            return on_error(exc)

    disabled = compile_disabled(guarded)
    try:
        from torch._C._dynamo.eval_frame import get_eval_frame_callback
    except ImportError:  # pragma: no cover - a torch without dynamo
        return disabled

    if on_error is None:
        def hook(*args: Any, **kwargs: Any) -> Any:
            if get_eval_frame_callback():
                return disabled(*args, **kwargs)
            return fn(*args, **kwargs)
    else:
        def hook(*args: Any, **kwargs: Any) -> Any:
            if get_eval_frame_callback():
                return disabled(*args, **kwargs)
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                return on_error(exc)

    for attr in ("__name__", "__qualname__", "__doc__"):
        if hasattr(fn, attr):
            try:
                setattr(hook, attr, getattr(fn, attr))
            except (AttributeError, TypeError):  # pragma: no cover - a builtin-like wrapper
                pass
    hook.__wrapped__ = fn  # type: ignore[attr-defined]
    return skip_tracing(hook)


class Handle:
    """A held reference to one layer: ``release()`` once (later calls do nothing); also a context manager."""

    def __init__(self, layer: _Layer) -> None:
        self._layer: _Layer | None = layer

    @property
    def active(self) -> bool:
        return self._layer is not None

    def release(self) -> None:
        with _LOCK:
            layer, self._layer = self._layer, None
            if layer is None:
                return
            layer.refs -= 1
            if layer.refs > 0:
                return
            slot = layer.slot
            slot.layers = tuple(x for x in slot.layers if x is not layer)
            if not slot.layers:
                slot.restore()
                _slots.pop((id(slot.owner), slot.name), None)

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def patch(owner: Any, name: str, make: Make, *, key: str | None = None, compile_safe: bool = True) -> Handle:
    """Replace ``owner.name`` (a module's function, a class's method, or an instance's attribute) by a layer:
    ``make(call_next)`` returns the wrapper, which calls ``call_next(*args, **kwargs)`` to go on (to older layers,
    then the original; ``inspect.signature(call_next)`` is the original's). For a method on a class, the wrapper
    gets ``self`` first, as the original does. ``key``: while a layer with this key is active on the attribute, a
    second ``patch`` with it adds a reference instead (``make`` is not called). ``compile_safe``: the dispatcher is
    excluded from ``torch.compile`` (set False only for callables never reached from compiled code). Returns the
    ``Handle`` to release. Raises ``AttributeError`` when ``owner`` has no attribute ``name``."""
    with _LOCK:
        slot_key = (id(owner), name)
        slot = _slots.get(slot_key)
        if slot is not None and not slot.ours_on_top():
            _slots.pop(slot_key)  # patched over by someone else (or restored by hand): start a new stack on top
            slot = None
        if key is not None and slot is not None:
            for layer in slot.layers:
                if layer.key == key:
                    layer.refs += 1
                    return Handle(layer)
        if slot is None:
            if not hasattr(owner, name):
                raise AttributeError(f"{owner!r} has no attribute {name!r} to patch")
            slot = _Slot(owner, name, compile_safe)
        layer = _Layer(key if key is not None else f"{getattr(make, '__qualname__', 'patch')}#{id(make):x}", slot)
        layer.wrapper = make(slot.call_below(layer))
        first = not slot.layers
        slot.layers = (*slot.layers, layer)
        if first:
            _slots[slot_key] = slot
            slot.install()
        return Handle(layer)


@contextlib.contextmanager
def patched(owner: Any, name: str, make: Make, *, key: str | None = None, compile_safe: bool = True) -> Iterator[Handle]:
    """``patch`` for the ``with`` block."""
    handle = patch(owner, name, make, key=key, compile_safe=compile_safe)
    try:
        yield handle
    finally:
        handle.release()


def active() -> list[ActivePatch]:
    """Every patch in place now, in the order they were first made."""
    with _LOCK:
        return [slot.describe() for slot in _slots.values()]


def is_patched(owner: Any, name: str) -> bool:
    """Whether ``owner.name`` currently holds one of our dispatchers."""
    with _LOCK:
        slot = _slots.get((id(owner), name))
        return slot is not None and slot.ours_on_top()


# Every (owner path, attribute) ssdaudit may patch on torch or the standard library; ``targets()`` resolves them.
# Each module that patches one of these registers it here (a test checks that nothing else is ever patched, and
# that `import ssdaudit` and the pytest plugin leave all of them untouched).
KNOWN: list[tuple[str, str]] = []


def register(owner_path: str, *names: str) -> None:
    """Declare attributes of ``owner_path`` (``torch.nn.functional``, ``torch.nn.Module``) that ssdaudit may patch."""
    for name in names:
        if (owner_path, name) not in KNOWN:
            KNOWN.append((owner_path, name))


def resolve(owner_path: str) -> Any:
    """The object a dotted path names (a module, or a class inside one), importing the module."""
    import importlib

    parts = owner_path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(owner_path)
