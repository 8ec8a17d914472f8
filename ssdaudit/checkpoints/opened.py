"""What an opened checkpoint is, whatever its format: ``CheckpointFile`` (tensor metadata up front, data on
demand) and ``TensorInfo``; the readers (``checkpoints``, ``dcp``) build them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# Keys under which checkpoints wrap their state_dict beside other state (an optimizer, an epoch).
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "network", "weights")

BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def is_buffer_name(key: str) -> bool:
    """BatchNorm statistics: the buffers a state_dict holds beside parameters (a naming heuristic)."""
    return key.rsplit(".", 1)[-1] in BUFFER_SUFFIXES


@dataclass(frozen=True)
class TensorInfo:
    """What a checkpoint says about one tensor, without reading its data."""

    key: str
    shape: tuple[int, ...]
    dtype: str  # "float32", "int64", ...
    numel: int
    nbytes: int


def tensor_info(key: str, shape: tuple[int, ...], dtype: str) -> TensorInfo:
    """A ``TensorInfo`` from a header's shape and dtype name ("float32"): numel and bytes computed."""
    import math

    import torch

    numel = math.prod(shape)
    return TensorInfo(key, shape, dtype, numel, numel * torch.empty((), dtype=getattr(torch, dtype)).element_size())


@dataclass
class CheckpointFile:
    """An opened checkpoint: tensor metadata up front, data on demand (``get``), pages dropped on ``release``."""

    path: Path
    file_bytes: int
    tensors: dict[str, TensorInfo]
    wrapper_key: str | None = None  # e.g. "model" when the state_dict sat inside {"model": ..., "epoch": ...}
    object_tensor_bytes: int = 0  # bytes of every storage in the file (optimizer state too), 0 when unknown
    trusted_pickle: bool = False  # some of it was unpickled with weights_only=False (the caller asked to trust it)
    _getter: Callable[[str], Any] = field(default=lambda key: None, repr=False)
    # Whether tensors from _getter live in a read-only file mapping (then release() may drop their pages).
    _releaser: Callable[[str, Any], None] | None = field(default=None, repr=False)

    def get(self, key: str) -> Any:
        """The tensor stored under ``key``, read now (memory-mapped where the format allows)."""
        return self._getter(key)

    def release(self, key: str, tensor: Any) -> None:
        """Done with ``tensor`` (from ``get(key)``): give its memory back where that is safe."""
        if self._releaser is not None:
            self._releaser(key, tensor)

    @property
    def params(self) -> int:
        """Values in parameter tensors (BatchNorm statistics, by name, excluded)."""
        return sum(t.numel for t in self.tensors.values() if not is_buffer_name(t.key))

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def state_dict(self) -> dict[str, Any]:
        return {k: self.get(k) for k in self.tensors}
