"""Loading what the user names: "file.py[:NAME]", "package.module:NAME", or a checkpoint file.

Every user mistake becomes a ``LoadError`` with a one-line message that names the problem and the fix.
Checkpoints are read with ``torch.load(weights_only=True)`` (never arbitrary unpickling) or safetensors.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".tar", ".ckpt")


from .errors import LoadError, UserError, first_line  # noqa: F401  (LoadError is part of this module's API)


@dataclass
class LoadedTarget:
    spec: str
    model: Any = None  # nn.Module, or None for a checkpoint target
    state_dict: dict[str, Any] | None = None  # for a checkpoint target: its tensors' shapes (meta tensors)
    checkpoint_bytes: int = 0  # for a checkpoint target: bytes on disk (all files of a directory)
    example_input: Any = None
    module: Any = None  # the Python module the model came from
    rebuild: Any = None  # () -> a new instance of the same model (None when the target was an instance)


def is_checkpoint_path(spec: str) -> bool:
    """A checkpoint file (by suffix), or a directory of one: DCP (``.metadata``), a shard index or shard files."""
    if spec.lower().endswith(CHECKPOINT_SUFFIXES):
        return True
    path = Path(spec)
    if not path.is_dir():
        return False
    return (path / ".metadata").is_file() or any(
        p.name.endswith(".index.json") or p.suffix in CHECKPOINT_SUFFIXES for p in path.iterdir())


def load_target(spec: str, device: str = "cpu", want_input: bool = True) -> LoadedTarget:
    """Build the model (or read the checkpoint) that ``spec`` names, on ``device`` ("cpu" or "meta")."""
    if is_checkpoint_path(spec):
        shapes, nbytes = load_checkpoint_shapes(spec)
        return LoadedTarget(spec, state_dict=shapes, checkpoint_bytes=nbytes)
    module, name = _import_spec(spec)
    factory = _find_factory(module, name, spec)
    model = _call_factory(factory, spec, device)
    from torch import nn

    rebuild = None if isinstance(factory, nn.Module) else (lambda: _call_factory(factory, spec, device))
    example = None
    if want_input and callable(getattr(module, "example_input", None)):
        try:
            with _device_context(device):
                example = module.example_input()
        except UserError:
            raise
        except Exception as exc:
            raise LoadError(f"example_input() in {spec.split(':')[0]} raised {exc.__class__.__name__}: {first_line(exc)}") from exc
    return LoadedTarget(spec, model=model, example_input=example, module=module, rebuild=rebuild)


def _import_spec(spec: str) -> tuple[types.ModuleType, str | None]:
    path_part, _, name = spec.partition(":") if ":" in spec and not _is_drive(spec) else (spec, "", "")
    if path_part.endswith(".py") or "/" in path_part or Path(path_part).exists():
        path = Path(path_part)
        if not path.exists():
            raise LoadError(f"no such file: {path} (give a model file, 'file.py:NAME', 'package.module:NAME' or a checkpoint)")
        if path.is_dir():
            raise LoadError(f"{path} is a directory: name a model file (file.py[:NAME]) or a checkpoint")
        if path.suffix != ".py":
            raise LoadError(f"{path} is neither a Python file nor a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})")
        return _import_file(path), name or None
    if not name:
        raise LoadError(f"cannot tell what {spec!r} is: give 'file.py[:NAME]', 'package.module:NAME' or a checkpoint file")
    try:
        return importlib.import_module(path_part), name
    except UserError:
        raise
    except ImportError as exc:
        raise LoadError(f"cannot import module {path_part!r}: {exc}") from exc
    except SyntaxError as exc:
        raise LoadError(f"syntax error in {exc.filename} line {exc.lineno}: {exc.msg}") from exc
    except Exception as exc:
        raise LoadError(f"importing {path_part} raised {exc.__class__.__name__}: {first_line(exc)}") from exc


def _is_drive(spec: str) -> bool:
    return len(spec) > 2 and spec[1] == ":" and spec[0].isalpha() and spec[2] in "\\/"


def _import_file(path: Path) -> types.ModuleType:
    stat = path.stat()  # an edited file is a new module: the cache key includes its size and mtime
    module_name = f"_ssdaudit_target_{abs(hash((str(path.resolve()), stat.st_mtime_ns, stat.st_size)))}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))  # the file may import its neighbours
    try:
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise LoadError(f"syntax error in {path} line {exc.lineno}: {exc.msg}") from exc
    except UserError:
        sys.modules.pop(module_name, None)
        raise
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise LoadError(f"importing {path} raised {exc.__class__.__name__}: {first_line(exc)}") from exc
    except BaseException:  # sys.exit, Ctrl-C: the half-imported module must not be cached
        sys.modules.pop(module_name, None)
        raise
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def _find_factory(module: types.ModuleType, name: str | None, spec: str) -> Any:
    from torch import nn

    if name:
        if not hasattr(module, name):
            raise LoadError(f"{spec}: no attribute {name!r} in {getattr(module, '__file__', module.__name__)}")
        return getattr(module, name)
    if callable(getattr(module, "build_model", None)):
        return module.build_model
    candidates = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__ and _zero_arg(obj)
    ]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise LoadError(f"{spec}: no build_model() and no nn.Module subclass that takes no arguments; name one with {spec}:NAME")
    names = ", ".join(sorted(c.__name__ for c in candidates))
    raise LoadError(f"{spec}: several nn.Module classes ({names}); pick one with {spec}:NAME")


def _zero_arg(cls: type) -> bool:
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def _device_context(device: str) -> contextlib.AbstractContextManager[Any]:
    import torch

    return torch.device(device) if device != "cpu" else contextlib.nullcontext()


def _call_factory(factory: Any, spec: str, device: str) -> Any:
    from torch import nn

    if isinstance(factory, nn.Module):
        return factory
    if not callable(factory):
        raise LoadError(f"{spec} is a {type(factory).__name__}, not a factory or nn.Module")
    try:
        with _device_context(device):
            model = factory()
    except UserError:
        raise
    except Exception as exc:
        raise LoadError(f"{spec}: the factory raised {exc.__class__.__name__}: {first_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise LoadError(f"{spec}: the factory returned a {type(model).__name__}, not an nn.Module")
    return model



def load_checkpoint_shapes(path: str | Path) -> tuple[dict[str, Any], int]:
    """The tensors of a checkpoint (a state_dict, or a dict wrapping one: "state_dict", "model", ...) as meta
    tensors of their shapes and dtypes, and the bytes on disk. Counting and key checks need no values, so none is
    read: a 10 GB checkpoint, or a DCP directory, costs its metadata only."""
    import torch

    from .checkpoints import open_checkpoint

    ckpt = open_checkpoint(path)
    shapes = {k: torch.empty(i.shape, dtype=getattr(torch, i.dtype, torch.uint8), device="meta")
              for k, i in ckpt.tensors.items()}
    return shapes, ckpt.file_bytes
