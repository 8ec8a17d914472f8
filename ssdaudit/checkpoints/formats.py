"""Reading checkpoints safely and lazily: torch.save files, safetensors, sharded directories, DCP directories.

Nothing here runs code from a pickle: torch.save files are read with ``torch.load(weights_only=True,
mmap=True)`` unless the caller explicitly trusts the file. Tensors are fetched one at a time, and
``release()`` hands the pages of a memory-mapped tensor back to the kernel, so comparing two large
checkpoints keeps only the tensors in hand resident, not the files.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import sys
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssdaudit.checkpoints.opened import BUFFER_SUFFIXES, STATE_DICT_KEYS, CheckpointFile, TensorInfo, is_buffer_name, tensor_info
from ssdaudit.core.errors import LoadError, a_type, first_line

__all__ = ["BUFFER_SUFFIXES", "STATE_DICT_KEYS", "CheckpointFile", "TensorInfo", "is_buffer_name", "open_checkpoint",
           "load_object", "find_state_dict", "drop_mapped_pages", "trusting_pickles"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".tar", ".ckpt")
INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


# What a load that is not told otherwise does with a file that needs Python globals: the command's --trust-pickle,
# set once by the CLI (``trusting_pickles``) instead of being passed through every layer between it and the load.
_TRUST_PICKLE: ContextVar[bool] = ContextVar("ssdaudit_trust_pickle", default=False)


@contextlib.contextmanager
def trusting_pickles(on: bool) -> Iterator[None]:
    """Within the block, loads that are not given ``trust_pickle`` explicitly unpickle files that hold Python
    objects (``weights_only=False``: runs their code) when ``on``; the refusal otherwise."""
    token = _TRUST_PICKLE.set(on)
    try:
        yield
    finally:
        _TRUST_PICKLE.reset(token)


def open_checkpoint(path: str | Path, trust_pickle: bool | None = None) -> CheckpointFile:
    """Open a checkpoint file or a directory of shards; raise ``LoadError`` with a one-line reason otherwise.
    ``trust_pickle`` None: as set by ``trusting_pickles`` (off by default)."""
    trust_pickle = _TRUST_PICKLE.get() if trust_pickle is None else trust_pickle
    path = Path(path)
    if not path.exists():
        raise LoadError(f"no such checkpoint: {path}")
    if path.is_dir():
        return _open_directory(path, trust_pickle)
    if path.suffix == ".safetensors":
        return _open_safetensors(path)
    return _open_torch(path, trust_pickle)


def _info(key: str, t: Any) -> TensorInfo:
    return TensorInfo(key, tuple(t.shape), str(t.dtype).removeprefix("torch."), t.numel(), t.numel() * t.element_size())


@dataclass
class LoadedObject:
    """What ``load_object`` read: the object, whether its tensors are memory-mapped, and whether it had to be
    unpickled with ``weights_only=False`` (only ever when the caller passed ``trust_pickle``)."""

    obj: Any
    mapped: bool = False
    unpickled: bool = False


class _Unpickled:
    """Marks an object that ``_trusted_load`` read with weights_only=False."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj


def load_object(path: str | Path, trust_pickle: bool | None = None, mmap: bool = True) -> LoadedObject:
    """The project's one way to unpickle a torch.save file: ``torch.load(weights_only=True)`` (memory-mapped when
    ``mmap`` and the format allows), every failure a one-line ``LoadError``.

    A file that needs Python globals is refused unless ``trust_pickle``; the result then says ``unpickled`` so the
    caller can warn (this module prints nothing). ``trust_pickle`` None: as set by ``trusting_pickles``."""
    import torch

    trust_pickle = _TRUST_PICKLE.get() if trust_pickle is None else trust_pickle
    path = Path(path)
    if not path.exists():
        raise LoadError(f"no such checkpoint: {path}")
    if not path.is_file():
        raise LoadError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise LoadError(f"{path} is empty (0 bytes): not a checkpoint (a write that was killed? use another copy)")
    if _looks_like_text(_head(path)):
        raise LoadError(f"{path} is a text file, not a checkpoint (torch.save or .safetensors)")
    if mmap:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # protocol notices about foreign pickles: the refusal below says more
                return LoadedObject(torch.load(path, map_location="cpu", weights_only=True, mmap=True), mapped=True)
        except Exception as exc:
            obj = _load_unmapped(path, exc, trust_pickle)
    else:
        obj = _load_unmapped(path, None, trust_pickle)
    if isinstance(obj, _Unpickled):
        return LoadedObject(obj.obj, unpickled=True)
    return LoadedObject(obj)


def _open_torch(path: Path, trust_pickle: bool) -> CheckpointFile:
    loaded = load_object(path, trust_pickle)
    obj, mapped = loaded.obj, loaded.mapped
    wrapper, state = find_state_dict(obj)
    if state is None:
        raise LoadError(f"{path} holds {_describe_object(obj)}: expected a state_dict (a dict of name -> tensor) or a "
                        f"dict wrapping one (under {', '.join(repr(k) for k in STATE_DICT_KEYS[:4])}, ...)")
    tensors = {k: _info(k, v) for k, v in state.items()}
    object_bytes = _object_tensor_bytes(obj)
    releaser = (lambda _key, t: drop_mapped_pages(t)) if mapped else None
    return CheckpointFile(
        path, path.stat().st_size, tensors, wrapper, object_bytes, loaded.unpickled, state.__getitem__, releaser
    )


_MAX_OBJECTS = 1_000_000  # containers visited when sizing a loaded object: a bound on hostile structure


def _object_tensor_bytes(obj: Any) -> int:
    """Bytes of the distinct tensors reachable in a loaded object (optimizer state too; tied tensors once).

    Each container is visited once (a pickle can make a list hold itself, or 2**60 paths through shared lists:
    "billion laughs"), and at most ``_MAX_OBJECTS`` of them."""
    import torch

    seen: dict[tuple[Any, ...], int] = {}
    visited: dict[int, Any] = {}  # id -> object: holding it keeps the id unique for the walk
    stack = [obj]
    while stack and len(visited) < _MAX_OBJECTS:
        o = stack.pop()
        if isinstance(o, (dict, list, tuple, torch.nn.Module)):
            if id(o) in visited:
                continue
            visited[id(o)] = o
        if isinstance(o, torch.Tensor):
            ident = (o.untyped_storage().data_ptr() or id(o), o.storage_offset(), tuple(o.shape), o.dtype)
            seen[ident] = o.numel() * o.element_size()
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
        elif isinstance(o, torch.nn.Module):
            stack.append(o.state_dict())
    return sum(seen.values())


def _describe_object(obj: Any) -> str:
    """What a loaded object is, for a message: "a dict of 3 tensors and 2 other values (keys 'epoch', ...)"."""
    import torch

    if not isinstance(obj, dict):
        return f"{a_type(obj)}, not a dict of tensors"
    n_tensors = sum(isinstance(v, torch.Tensor) for v in obj.values())
    others = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not n_tensors:
        return f"a dict with no tensors (keys {', '.join(repr(k) for k in list(obj)[:4])}{', ...' if len(obj) > 4 else ''})"
    shown = ", ".join(repr(k) for k in others[:3]) + (", ..." if len(others) > 3 else "")
    return f"a dict that mixes {n_tensors} tensors with {len(others)} other values ({shown})"


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(64)


def _looks_like_text(head: bytes) -> bool:
    if head.startswith((b"PK", b"\x80")):  # zip (torch.save) or a raw pickle
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c >= 32 or c in b"\t\r\n" for c in head)


def _load_unmapped(path: Path, first: Exception | None, trust_pickle: bool) -> Any:
    """A file torch.load could not map (legacy format, a pickle that needs code, or not a checkpoint), or one
    read without mmap on purpose (``first`` is None)."""
    import torch

    if first is not None and _needs_python_global(str(first)):  # the weights-only unpickler met Python code
        return _trusted_load(path, str(first), trust_pickle)
    try:  # legacy (non-zip) torch.save files cannot be memory-mapped
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if _needs_python_global(str(exc)):
            return _trusted_load(path, str(exc), trust_pickle)
        reason = _unpickler_reason(str(exc))
        if reason is not None and trust_pickle:  # the user trusts the file: unpickle it fully (or say why not)
            return _trusted_load(path, str(exc), True)
        if reason is not None and not _looks_like_pickle(_head(path)):
            raise LoadError(
                f"cannot read checkpoint {path}: it is neither a zip archive nor a pickle (its first bytes are "
                f"{_head(path)[:4]!r}), so not a torch.save file: damaged, or another kind of file?"
            ) from exc
        if reason is not None:
            raise LoadError(
                f"refused to read {path}: the safe (weights-only) unpickler does not accept it ({reason[:120]}): it is a "
                "pickle of Python objects, not a plain torch.save of tensors, and unpickling it could run code; re-save it "
                "as a state_dict, or pass --trust-pickle if you trust where it came from"
            ) from exc
        raise LoadError(
            f"cannot read checkpoint {path}: {_safe_reason(exc)} (truncated, or not a torch.save file?)"
        ) from (first or exc)


def _trusted_load(path: Path, message: str, trust_pickle: bool) -> Any:
    import torch

    what = _unsupported_global(message)
    if not trust_pickle:
        raise LoadError(
            f"refused to unpickle {path}: it needs {what}, i.e. it stores Python objects, not only tensors, "
            "and unpickling them can run arbitrary code; re-save it as a state_dict, or pass --trust-pickle "
            "if you trust where it came from"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _Unpickled(torch.load(path, map_location="cpu", weights_only=False))
    except Exception as exc:
        raise LoadError(f"cannot unpickle {path} even with --trust-pickle: {first_line(exc)}") from exc


def _looks_like_pickle(head: bytes) -> bool:
    """A pickle of protocol 2 to 5 (what torch.save's legacy format writes) or a zip archive (its current one)."""
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head.startswith(b"PK\x03\x04")


def _needs_python_global(message: str) -> bool:
    """torch's weights-only unpickler refusing a global ("Unsupported global: GLOBAL os.system", or "unsupported
    GLOBAL" for raw and legacy pickles in newer torch)."""
    lower = message.lower()
    return "unsupported global" in lower or ("global" in lower and "weights_only" in lower and "unsupported" in lower)


def _safe_reason(exc: BaseException) -> str:
    """The first line of torch's error, minus its advice to re-run with weights_only=False (never for an
    untrusted file)."""
    line = first_line(exc)
    if "weights_only" in line.lower() or "re-running" in line.lower():
        return exc.__class__.__name__
    return line


def _unsupported_global(message: str) -> str:
    import re

    m = re.search(r"GLOBAL\s+([\w.]+)", message) or re.search(r"unsupported global:?\s*([\w.]+)", message, re.IGNORECASE)
    return m.group(1) if m else "Python globals"


def _unpickler_reason(message: str) -> str | None:
    """What torch's weights-only unpickler refused ("Unsupported operand 149"), or None for other errors."""
    lines = [x.strip() for x in message.splitlines()]
    for k, line in enumerate(lines):
        at = line.lower().find("weightsunpickler error:")
        if at >= 0:
            rest = line[at + len("weightsunpickler error:"):].strip()
            following = [x for x in lines[k + 1:] if x]
            return rest or (following[0] if following else "an unsupported pickle instruction")
    return None



def find_state_dict(obj: Any, _prefix: str | None = None, _depth: int = 0) -> tuple[str | None, dict[str, Any] | None]:
    """The state_dict in ``obj`` and the key it was under: a dict of tensors (string keys), a wrapping dict, or
    an nn.Module. Wrappers are followed at most 8 levels deep (a dict can hold itself)."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return _prefix, obj.state_dict()
    if isinstance(obj, dict) and _depth < 8:
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor) and isinstance(k, str)}
        if tensors and len(tensors) == len(obj):
            return _prefix, dict(obj)
        for key in STATE_DICT_KEYS:
            if key in obj:
                found_key, inner = find_state_dict(obj[key], key if _prefix is None else f"{_prefix}.{key}", _depth + 1)
                if inner:
                    return found_key, inner
    return _prefix, None


def _open_safetensors(path: Path) -> CheckpointFile:
    try:
        from safetensors import safe_open
    except ImportError:
        raise LoadError("reading .safetensors needs the safetensors package: pip install 'ssdaudit[safetensors]'") from None
    try:
        handle = safe_open(str(path), framework="pt")
        tensors = {}
        for key in handle.keys():  # type: ignore[no-untyped-call]  # safetensors ships no annotations here
            s = handle.get_slice(key)  # type: ignore[no-untyped-call]
            shape = tuple(s.get_shape())
            tensors[key] = tensor_info(key, shape, _SAFETENSORS_DTYPES.get(s.get_dtype(), s.get_dtype().lower()))
    except Exception as exc:
        raise LoadError(f"cannot read {path} as safetensors: {first_line(exc)}") from exc
    return CheckpointFile(
        path, path.stat().st_size, tensors, None, sum(t.nbytes for t in tensors.values()), False, handle.get_tensor
    )


_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


def _open_directory(path: Path, trust_pickle: bool) -> CheckpointFile:
    from ssdaudit.checkpoints.dcp import is_dcp_dir, open_dcp

    if is_dcp_dir(path):  # torch.distributed.checkpoint.save (FSDP2, DTensor): .metadata + __N_M.distcp
        return open_dcp(path)
    index = next((path / n for n in INDEX_NAMES if (path / n).exists()), None)
    if index is None:
        indexes = sorted(path.glob("*.index.json"))
        index = indexes[0] if indexes else None
    if index is not None:
        weight_map = _read_weight_map(index)
        shard_names = sorted(set(weight_map.values()))
    else:
        shard_names = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", *TORCH_SUFFIXES) and p.is_file())
        weight_map = None
    if not shard_names:
        raise LoadError(f"{path} is a directory with no checkpoint in it (no DCP .metadata, *.index.json, .safetensors or "
                        ".pt/.pth/.bin file)")
    shards = {}
    for name in shard_names:
        shard_path = path / name
        if not shard_path.exists():
            raise LoadError(f"{index} names shard {name}, which is missing from {path}")
        shards[name] = open_checkpoint(shard_path, trust_pickle)
    tensors: dict[str, TensorInfo] = {}
    owner: dict[str, CheckpointFile] = {}
    for name, shard in shards.items():
        for key, info in shard.tensors.items():
            if weight_map is not None and weight_map.get(key) != name:
                continue  # the index decides where a key lives
            if key in owner:  # shards split a state_dict; files that share keys are separate checkpoints
                first = next(n for n, s in shards.items() if s is owner[key])
                raise LoadError(f"{path} holds files that share tensor names ({key!r} is in {first} and {name}): "
                                "separate checkpoints, not shards of one; name one file, or add a *.index.json")
            tensors[key] = info
            owner[key] = shard
    if weight_map is not None:
        missing = [k for k in weight_map if k not in tensors]
        if missing:
            raise LoadError(f"{index} lists {len(missing)} tensors its shards lack, e.g. {missing[0]}")
    total = sum(s.file_bytes for s in shards.values())
    return CheckpointFile(
        path, total, tensors, None, sum(s.object_tensor_bytes for s in shards.values()),
        any(s.trusted_pickle for s in shards.values()), lambda k: owner[k].get(k), lambda k, t: owner[k].release(k, t)
    )


def _read_weight_map(index: Path) -> dict[str, str]:
    """The index's ``weight_map`` (tensor name -> shard file), checked: names are strings, and every shard is a
    plain file name inside the index's folder (never ``../x`` or ``/etc/passwd``)."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise LoadError(f"{index} is not a shard index (unreadable JSON: {first_line(exc)}); fix or remove it") from exc
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise LoadError(f"{index}: 'weight_map' must be an object of tensor name -> shard file name; fix or remove the index")
    for name in set(weight_map.values()):
        if not name or Path(name).name != name or name in (".", ".."):
            raise LoadError(f"{index}: weight_map names shard {name!r}, which is not a file in the index's folder; "
                            "refusing to read outside it")
    return weight_map


# --- handing memory-mapped pages back -------------------------------------------------------------

_MADV_DONTNEED = 4
_libc: ctypes.CDLL | bool | None = None  # None: not looked up yet; False: not available


def drop_mapped_pages(tensor: Any) -> None:
    """Drop the resident pages behind a tensor (or a contiguous slice of one) of a read-only file mapping (Linux); touched again, they are re-read.

    Only for tensors of ``torch.load(mmap=True)``: on ordinary memory MADV_DONTNEED would zero the data. Without this, walking a mapped 1 GB checkpoint leaves 1 GB resident in the process by the end.
    """
    global _libc
    if not sys.platform.startswith("linux") or tensor.device.type != "cpu":
        return
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = False
    if not _libc:
        return
    if not tensor.is_contiguous():
        storage = tensor.untyped_storage()
        start, nbytes = storage.data_ptr(), storage.nbytes()
    else:  # just this tensor's bytes: a chunk of a larger tensor can be dropped on its own
        start, nbytes = tensor.data_ptr(), tensor.numel() * tensor.element_size()
    page = 4096
    first = (start + page - 1) // page * page  # never touch a page shared with memory before the storage
    last = (start + nbytes) // page * page
    if last > first:
        # Only file-backed private pages that were never written are dropped; madvise fails harmlessly elsewhere.
        _libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)  # type: ignore[union-attr]


def load_checkpoint_shapes(path: str | Path) -> tuple[dict[str, Any], int]:
    """The tensors of a checkpoint (a state_dict, or a dict wrapping one: "state_dict", "model", ...) as meta
    tensors of their shapes and dtypes, and the bytes on disk. Counting and key checks need no values, so none is
    read: a 10 GB checkpoint, or a DCP directory, costs its metadata only. Raises ``LoadError``."""
    import torch

    ckpt = open_checkpoint(path)
    shapes = {k: torch.empty(i.shape, dtype=getattr(torch, i.dtype, torch.uint8), device="meta")
              for k, i in ckpt.tensors.items()}
    return shapes, ckpt.file_bytes
