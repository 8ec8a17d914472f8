"""What the user names, parsed once (``TargetSpec``), and the model it names built (``load_target``).

A target is "file.py[:NAME]", "package.module:NAME", a library model ("torchvision:resnet50", "timm:NAME",
"hf:MODEL_TYPE" or "hf:path/to/folder" with a config.json), or a checkpoint (a file by suffix, or a directory of
shards or DCP). Checkpoints are read by ``ssdaudit.checkpoints``; this module only recognises them.

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
from collections.abc import Iterator
from typing import Any

from ssdaudit.core.errors import LoadError, UserError, a_type, first_line

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".tar", ".ckpt")


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


LIBRARIES = ("torchvision", "timm", "hf")


@dataclass(frozen=True)
class TargetSpec:
    """A parsed target. ``kind``: "file" (``path`` a .py file), "module" (``path`` a dotted module name),
    "library" (``path`` the library: torchvision, timm or hf; ``name`` the model), or "checkpoint" (``path`` a file
    or directory). ``name`` is the part after the separating colon (a Windows drive letter is not one)."""

    text: str
    kind: str
    path: str
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> "TargetSpec":
        """Parse a target as the user wrote it; raises ``LoadError`` for an empty one. Nothing is read or run."""
        text = text.strip()
        if not text:
            raise LoadError("empty target: give 'file.py[:NAME]', 'package.module:NAME', 'torchvision:NAME' or a checkpoint")
        head, sep, tail = text.partition(":")
        if sep and head in LIBRARIES and not _is_drive(text):
            if not tail:
                raise LoadError(f"{text}: name a model after the colon, e.g. {head}:{_EXAMPLE_MODEL[head]}")
            return cls(text, "library", head, tail)
        if is_checkpoint_path(text):
            return cls(text, "checkpoint", text)
        if _is_drive(text):  # C:\m.py or C:\m.py:Net: the first colon is the drive's
            rest_head, rest_sep, rest_tail = text[2:].partition(":")
            path, name = text[:2] + rest_head, (rest_tail if rest_sep else None)
        else:
            path, name = head, (tail if sep else None)
        if path.endswith(".py") or "/" in path or "\\" in path or Path(path).exists():
            return cls(text, "file", path, name or None)
        return cls(text, "module", path, name or None)

    @property
    def file(self) -> str | None:
        """The source file of a "file" target, else None."""
        return self.path if self.kind == "file" else None

    def resolved(self, root: Path | None) -> "TargetSpec":
        """A file or checkpoint target made absolute against ``root`` when it exists there; others unchanged."""
        if root is None or self.kind not in ("file", "checkpoint") or Path(self.path).is_absolute():
            return self
        candidate = root / self.path
        if not candidate.exists():
            return self
        text = f"{candidate}:{self.name}" if self.name else str(candidate)
        return TargetSpec(text, self.kind, str(candidate), self.name)


_EXAMPLE_MODEL = {"torchvision": "resnet50", "timm": "convnext_tiny", "hf": "bert"}


def load_target(spec: str | TargetSpec, device: str = "cpu", want_input: bool = True) -> LoadedTarget:
    """Build the model that ``spec`` names, on ``device`` ("cpu", or "meta": no parameter memory), with the
    file's ``example_input()`` (or a library model's usual input) when ``want_input``. Runs the target's code:
    importing the file, the factory and ``example_input()``. Raises ``LoadError`` for anything the user can fix,
    including a checkpoint target (``ssdaudit.checkpoints`` reads those)."""
    parsed = spec if isinstance(spec, TargetSpec) else TargetSpec.parse(spec)
    text = parsed.text
    if parsed.kind == "checkpoint":
        raise LoadError(f"{text} is a checkpoint, not a model: this command needs a model file or 'package.module:NAME'")
    if parsed.kind == "library":
        from ssdaudit.core.library_models import build_library_model

        model, example, build = build_library_model(parsed.path, parsed.name or "", device, want_input)
        return LoadedTarget(text, model=model, example_input=example, rebuild=build)
    module, name = _import_spec(parsed)
    factory = _find_factory(module, name, text)
    model = _call_factory(factory, text, device)
    from torch import nn

    rebuild = None if isinstance(factory, nn.Module) else (lambda: _call_factory(factory, text, device))
    example = None
    if want_input and callable(getattr(module, "example_input", None)):
        try:
            with _device_context(device):
                example = module.example_input()
        except UserError:
            raise
        except Exception as exc:
            raise LoadError(f"example_input() in {parsed.path} raised {exc.__class__.__name__}: {first_line(exc)}") from exc
    return LoadedTarget(text, model=model, example_input=example, module=module, rebuild=rebuild)


def _import_spec(spec: TargetSpec) -> tuple[types.ModuleType, str | None]:
    if spec.kind == "file":
        path = Path(spec.path)
        if not path.exists():
            raise LoadError(f"no such file: {path} (give a model file, 'file.py:NAME', 'package.module:NAME' or a checkpoint)")
        if path.is_dir():
            raise LoadError(f"{path} is a directory: name a model file (file.py[:NAME]) or a checkpoint")
        if path.suffix != ".py":
            raise LoadError(f"{path} is neither a Python file nor a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})")
        return _import_file(path), spec.name
    if not spec.name:
        raise LoadError(f"cannot tell what {spec.text!r} is: give 'file.py[:NAME]', 'package.module:NAME', "
                        "'torchvision:NAME' or a checkpoint file")
    try:
        return importlib.import_module(spec.path), spec.name
    except UserError:
        raise
    except ImportError as exc:
        raise LoadError(f"cannot import module {spec.path!r}: {exc}") from exc
    except SyntaxError as exc:
        raise LoadError(f"syntax error in {exc.filename} line {exc.lineno}: {exc.msg}") from exc
    except Exception as exc:
        raise LoadError(f"importing {spec.path} raised {exc.__class__.__name__}: {first_line(exc)}") from exc


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
        raise LoadError(f"{spec} is {a_type(factory)}, not a factory or nn.Module")
    try:
        with _device_context(device):
            model = factory()
    except UserError:
        raise
    except Exception as exc:
        raise LoadError(f"{spec}: the factory raised {exc.__class__.__name__}: {first_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise LoadError(f"{spec}: the factory returned {a_type(model)}, not an nn.Module")
    return model


@contextlib.contextmanager
def importable_from(root: Path | None) -> Iterator[None]:
    """``package.module:NAME`` specs are imported from ``root`` too, for the duration."""
    if root is None:
        yield
        return
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(root))
