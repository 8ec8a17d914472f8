"""The targets a registration audit accepts: a model (``core.targets``) or a checkpoint's tensors (their shapes)."""

from __future__ import annotations

from typing import Any

from ssdaudit.checkpoints.formats import load_checkpoint_shapes
from ssdaudit.core.targets import LoadedTarget, TargetSpec, load_target


def load_model_or_checkpoint(spec: str | TargetSpec, device: str = "cpu", want_input: bool = True) -> LoadedTarget:
    """A model target built (see ``core.targets.load_target``), or a checkpoint target read as meta tensors of its
    shapes with its bytes on disk (no values read). Raises ``LoadError``."""
    parsed = spec if isinstance(spec, TargetSpec) else TargetSpec.parse(spec)
    if parsed.kind == "checkpoint":
        shapes, nbytes = load_checkpoint_shapes(parsed.path)
        return LoadedTarget(parsed.text, state_dict=shapes, checkpoint_bytes=nbytes)
    return load_target(parsed, device=device, want_input=want_input)


def probe_input(shape: tuple[int, ...] | None, default: Any, device: str = "cpu") -> Any:
    """The forward probe's input: random values of ``shape`` when the user gave one (an explicit ``--input-shape``
    or ``input_shape`` wins over the file's ``example_input()``), else ``default``.

    ``shape`` is in elements per dimension. Where the default is an integer tensor (token ids), the random input is
    integer too, in 0..1 (valid ids for any vocabulary); otherwise float32 uniform in [0, 1)."""
    if not shape:
        return default
    import torch

    like = default if isinstance(default, torch.Tensor) else None
    if like is not None and not like.is_floating_point() and not like.is_complex() and like.dtype is not torch.bool:
        return torch.randint(0, 2, shape, dtype=like.dtype, device=device)
    return torch.rand(shape, device=device)
