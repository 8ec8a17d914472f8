"""Reading a trained SSDLite back: a trainer checkpoint (weights + config + training state) or a bare state_dict.

Every file is untrusted: it is unpickled with ``weights_only=True`` (``ssdaudit.checkpoints.formats.load_object``), and
its structure and values are checked before anything is built from them, so a wrong type, an absurd size or a
missing entry becomes one ``CheckpointError`` line naming the file and the key, never a traceback or a 40 GB
allocation.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ssdaudit.core.errors import LoadError, UserError

from .config import SSDLiteConfig
from .detector import SSDLite

# Bounds a real configuration stays within; beyond them a checkpoint's config is corrupt or hostile.
MAX_CLASSES = 100_000
MAX_IMAGE_SIZE = 4096
MAX_WIDTH = 8.0


class CheckpointError(UserError):
    """A checkpoint that cannot be used: unreadable, the wrong structure, or values out of range. Exit code 2."""

    kind = "checkpoint"


def read_checkpoint(path: str | Path) -> Any:
    """The unpickled object of ``path`` (weights-only); a missing, empty, corrupt or hostile file raises."""
    from ssdaudit import load_object

    try:
        obj = load_object(path, mmap=False).obj
    except LoadError as exc:
        raise CheckpointError(str(exc)) from exc
    return obj


def config_to_dict(config: SSDLiteConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(data: Any, where: str = "config") -> SSDLiteConfig:
    """An SSDLiteConfig from a checkpoint's ``config`` entry, each value checked against the field's type.

    Unknown keys are ignored (newer files); missing keys take the defaults. Raises ``CheckpointError`` naming the
    key for a wrong type or an out-of-range value."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{where} must be a dict of configuration values, got {type(data).__name__}")
    defaults = SSDLiteConfig()
    values: dict[str, Any] = {}
    for f in dataclasses.fields(SSDLiteConfig):
        if f.name not in data:
            continue
        optional = "None" in str(f.type)
        values[f.name] = _checked(f.name, data[f.name], getattr(defaults, f.name), where, optional)
    for key, limit in (("num_classes", MAX_CLASSES), ("image_size", MAX_IMAGE_SIZE), ("width_mult", MAX_WIDTH)):
        if key in values and values[key] > limit:
            raise CheckpointError(f"{where}: {key} = {values[key]} is beyond any real model (at most {limit})")
    try:
        return SSDLiteConfig(**values)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{where}: {exc}") from exc


def _checked(key: str, value: Any, default: Any, where: str, optional: bool = False) -> Any:
    """``value`` converted to the kind of ``default`` (tuples from lists), or CheckpointError; ``optional``: None
    is allowed too."""
    if value is None and optional:
        return None
    def bad(expected: str) -> CheckpointError:
        return CheckpointError(f"{where}: {key} must be {expected}, got {value!r:.80}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise bad("a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if isinstance(default, tuple) or default is None:
        if not isinstance(value, (list, tuple)) or len(value) > 64:
            raise bad("a list")
        return tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in value)
    return value


def weights_of(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """The ``name -> tensor`` dict in ``obj``; raises CheckpointError naming a non-tensor entry."""
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{where} must be a non-empty dict of tensors")
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{where}[{k!r:.60}] is a {type(v).__name__}, not a tensor")
    return obj


def load_checkpoint_model(path: str | Path, fallback: SSDLiteConfig | None = None) -> tuple[SSDLite, dict[str, Any]]:
    """An SSDLite with a checkpoint's weights, in eval mode, and the checkpoint's dict.

    A trainer checkpoint brings its config; a bare state_dict is built with ``fallback``. The model is first built
    on the meta device, so keys and shapes are compared before a single weight is allocated."""
    path = Path(path)
    state = read_checkpoint(path)
    if isinstance(state, dict) and "model" in state and "config" in state:
        config = config_from_dict(state["config"], f"{path}: config")
        weights = weights_of(state["model"], f"{path}: model")
    elif isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        if fallback is None:
            raise CheckpointError(f"{path} is a bare state_dict without a config: pass --preset")
        config, weights, state = fallback, weights_of(state, str(path)), {}
    else:
        raise CheckpointError(f"{path} is not an ssdlite checkpoint (no 'model' and 'config' entries); "
                              "`ssdaudit diff` or `ssdaudit params` read other checkpoints")
    with torch.device("meta"):
        skeleton = SSDLite(config)
    from ssdaudit import compare_keys

    missing, unexpected, shapes = compare_keys(skeleton.state_dict(), weights)
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", shapes)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise CheckpointError(f"{path} does not fit an SSDLite with {config.num_classes} classes at width "
                              f"{config.width_mult}: " + "; ".join(parts) + " (ssdaudit diff shows all)")
    model = SSDLite(config)
    model.load_state_dict(weights)
    return model.eval(), state
