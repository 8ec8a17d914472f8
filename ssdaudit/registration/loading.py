"""The targets a registration audit accepts: a model (``core.targets``) or a checkpoint's tensors (their shapes)."""

from __future__ import annotations

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
