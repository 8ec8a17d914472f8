"""Reading torch.distributed.checkpoint (DCP) directories: the metadata without running pickled code, tensors one
at a time through DCP's own reader.

A DCP directory is what ``torch.distributed.checkpoint.save`` writes (FSDP2, DTensor, large-scale training): a
``.metadata`` pickle (every tensor's global shape, dtype and chunks) and ``__<rank>_<n>.distcp`` data files.
DCP's ``FileSystemReader.read_metadata`` unpickles ``.metadata`` with plain ``pickle.load``, which runs whatever
code a hostile file names; here it is read by an unpickler that accepts only DCP's own metadata classes, torch
dtypes and sizes. A tensor stored as one chunk (a one-process save) is read straight from its byte range with
``torch.load(weights_only=True)``, as DCP's reader does, without DCP's extra destination copy; a sharded tensor goes
through ``torch.distributed.checkpoint.load``, which reassembles the shards into one full tensor. One tensor per
call: peak memory is the tensor in hand (and, for a sharded one, its destination), whatever the checkpoint's size.
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path
from typing import IO, Any, cast

from ssdaudit.checkpoints.opened import STATE_DICT_KEYS, CheckpointFile, TensorInfo, tensor_info
from ssdaudit.core.errors import LoadError, a_type, first_line

METADATA_NAME = ".metadata"

# What a DCP .metadata pickle may name: DCP's metadata classes and torch's dtype/size/layout helpers.
_ALLOWED_MODULES = {"torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem"}
_ALLOWED_NAMES = {
    ("torch", "Size"), ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PureWindowsPath"),
    ("pathlib", "Path"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
}


def is_dcp_dir(path: Path) -> bool:
    """A directory that ``torch.distributed.checkpoint.save`` wrote (it holds a ``.metadata`` file)."""
    return path.is_dir() and (path / METADATA_NAME).is_file()


class _Refused(pickle.UnpicklingError):
    """A global the allow-list refuses (distinct from the unpickler's own errors, such as truncated data)."""


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        import torch

        if module in _ALLOWED_MODULES:
            obj = super().find_class(module, name)
            if isinstance(obj, type):  # classes (dataclasses, enums) only: never a function of those modules
                return obj
        elif (module, name) in _ALLOWED_NAMES:
            return super().find_class(module, name)
        elif module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise _Refused(f"needs {module}.{name}")


def read_metadata(path: Path) -> Any:
    """The ``Metadata`` of a DCP directory, unpickled with only DCP's metadata classes allowed."""
    from torch.distributed.checkpoint.metadata import Metadata

    meta_path = path / METADATA_NAME
    try:
        data = meta_path.read_bytes()
        metadata = _MetadataUnpickler(io.BytesIO(data)).load()
    except _Refused as exc:
        raise LoadError(f"refused to read {meta_path}: it {exc}, which DCP metadata never does (unpickling it could "
                        "run code); this is not a checkpoint written by torch.distributed.checkpoint") from exc
    except Exception as exc:
        raise LoadError(f"cannot read {meta_path}: {exc.__class__.__name__}: {first_line(exc)} "
                        "(truncated, or not written by torch.distributed.checkpoint?)") from exc
    if not isinstance(metadata, Metadata) or not isinstance(metadata.state_dict_metadata, dict):
        raise LoadError(f"{meta_path} holds {a_type(metadata)}, not torch.distributed.checkpoint Metadata")
    _check_storage(path, metadata)
    return metadata


def _check_storage(path: Path, metadata: Any) -> None:
    """Every data file the metadata points at is a plain file name inside ``path`` and exists."""
    storage = metadata.storage_data
    if not isinstance(storage, dict):
        raise LoadError(f"{path / METADATA_NAME} has no storage table: not a filesystem DCP checkpoint")
    names = {getattr(info, "relative_path", None) for info in storage.values()}
    for name in names:
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise LoadError(f"{path / METADATA_NAME} points at data file {name!r}, which is not a file in its folder; "
                            "refusing to read outside it")
        if not (path / name).is_file():
            raise LoadError(f"{path} lacks {name}, which its .metadata names (an incomplete copy of the checkpoint?)")


def _state_dict_keys(metadata: Any) -> tuple[str | None, dict[str, str]]:
    """(wrapper, {name: DCP key}) for the model's tensors: under "model"/"state_dict"/... when the checkpoint
    wraps the state_dict beside other state (an optimizer, an epoch), otherwise every tensor."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    tensor_keys = [k for k, v in metadata.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata)]
    planner = metadata.planner_data if isinstance(metadata.planner_data, dict) else {}
    paths = {k: tuple(planner.get(k) or k.split(".", 1)) for k in tensor_keys}
    tops = {p[0] for p in paths.values() if len(p) > 1}
    wrapper = next((w for w in STATE_DICT_KEYS if w in tops), None)
    if wrapper is None and len(tops) == 1 and all(len(p) > 1 for p in paths.values()):
        wrapper = next(iter(tops))
    if wrapper is None:
        return None, {k: k for k in tensor_keys}
    return wrapper, {".".join(str(x) for x in p[1:]): k for k, p in paths.items() if len(p) > 1 and p[0] == wrapper}


def open_dcp(path: Path) -> CheckpointFile:
    """Open a DCP directory: tensor metadata now, each tensor read (and its shards reassembled) on ``get``."""
    import torch
    from torch.distributed.checkpoint.filesystem import FileSystemReader

    metadata = read_metadata(path)
    wrapper, keys = _state_dict_keys(metadata)
    if not keys:
        raise LoadError(f"{path} is a DCP checkpoint without tensors (keys {', '.join(list(metadata.state_dict_metadata)[:4])})")
    tensors: dict[str, TensorInfo] = {}
    for name, key in keys.items():
        md = metadata.state_dict_metadata[key]
        tensors[name] = tensor_info(name, tuple(int(d) for d in md.size), str(md.properties.dtype).removeprefix("torch."))

    class _SafeReader(FileSystemReader):  # DCP's reader, with the checked metadata instead of its pickle.load
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            return metadata

    reader = _SafeReader(str(path))
    whole = _single_chunk_locations(metadata)

    def get(name: str) -> Any:
        if keys[name] in whole:
            return _read_whole(path, name, tensors[name], *whole[keys[name]])
        from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
        from torch.distributed.checkpoint.api import CheckpointException

        info = tensors[name]
        out = {keys[name]: torch.empty(info.shape, dtype=getattr(torch, info.dtype))}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "assuming the intent is to load in a single process": it is
                dcp_load(out, storage_reader=reader, no_dist=True)
        except (Exception, CheckpointException) as exc:  # CheckpointException derives from BaseException
            cause = _root_failure(exc)
            raise LoadError(f"cannot read {name} from {path}: {cause.__class__.__name__}: {first_line(cause)} "
                            "(a data file truncated or overwritten?)") from exc
        return out[keys[name]]

    file_bytes = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    # object_tensor_bytes 0 (unknown): DCP writes each chunk by itself, so C006's whole-storage case cannot arise
    return CheckpointFile(path, file_bytes, tensors, wrapper, 0, False, get)


def _single_chunk_locations(metadata: Any) -> dict[str, tuple[str, int, int]]:
    """DCP key -> (data file, offset, length) for tensors saved as one untransformed chunk covering the tensor."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    entries: dict[str, list[Any]] = {}
    for index, info in metadata.storage_data.items():
        entries.setdefault(index.fqn, []).append(info)
    out = {}
    for key, md in metadata.state_dict_metadata.items():
        if not isinstance(md, TensorStorageMetadata) or len(md.chunks) != 1 or len(entries.get(key, ())) != 1:
            continue
        chunk, info = md.chunks[0], entries[key][0]
        if tuple(chunk.sizes) == tuple(md.size) and not any(chunk.offsets) and not getattr(info, "transform_descriptors", None):
            out[key] = (info.relative_path, int(info.offset), int(info.length))
    return out


class _ByteRange(io.RawIOBase):
    """A read-only, seekable view of ``length`` bytes of ``file`` from ``offset`` (torch.load reads a chunk in place)."""

    def __init__(self, file: Any, offset: int, length: int) -> None:
        super().__init__()
        self.file, self.offset, self.length, self.pos = file, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        self.pos = max(0, min(self.length, base + pos))
        return self.pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self.length - self.pos)
        if n <= 0:
            return 0
        self.file.seek(self.offset + self.pos)
        got = self.file.readinto(view[:n])
        self.pos += got
        return int(got)


def _read_whole(path: Path, name: str, info: TensorInfo, file_name: str, offset: int, length: int) -> Any:
    import torch

    try:
        with open(path / file_name, "rb") as f:
            if offset + length > (path / file_name).stat().st_size:
                raise EOFError(f"{file_name} ends before byte {offset + length}")
            chunk = cast(IO[bytes], _ByteRange(f, offset, length))
            tensor = torch.load(chunk, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LoadError(f"cannot read {name} from {path}: {exc.__class__.__name__}: {first_line(exc)} "
                        "(a data file truncated or overwritten?)") from exc
    if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != info.shape:
        raise LoadError(f"cannot read {name} from {path}: its data is not a tensor of shape {list(info.shape)}")
    return tensor


def _root_failure(exc: BaseException) -> BaseException:
    """The error behind DCP's CheckpointException (which wraps each rank's failure with its traceback)."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict) and failures:
        first = next(iter(failures.values()))
        if isinstance(first, tuple) and first and isinstance(first[0], BaseException):
            return first[0]
    return exc
