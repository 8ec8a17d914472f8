"""What a training run is: its settings, its data, its learning-rate schedule, and how a resumed run merges the
settings its checkpoint stores with the flags given again."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ssdaudit.core.errors import UserError

from ..checkpoint import CheckpointError, config_from_dict, read_checkpoint
from ..config import SSDLiteConfig
from ..data import COCOFiles, DataError, ShapesDataset, Transformed, VOCFiles, eval_transform, ssd_train_transform

CHECKPOINT = "last.pth"
BEST = "best.pth"
METRICS = "metrics.jsonl"
RUN_FILES = (CHECKPOINT, BEST, METRICS, "gradflow/index.json")
# Settings a resumed run may change without changing what it computes.
RESUME_FREE = frozenset({"out", "resume", "workers", "progress", "device", "eval_batch_size", "gradflow"})


class TrainError(UserError):
    """A problem the user can fix (data, run directory, resume); the message is one line. Exit code 2."""

    kind = "train"


class Diverged(Exception):
    """The loss became NaN or Inf; the last good checkpoint is kept. Exit code 1."""


@dataclass
class TrainSettings:
    data: str = "synthetic"  # synthetic | voc:ROOT | coco:IMAGES,ANNOTATIONS[,VAL_ANNOTATIONS]
    epochs: int = 10
    batch_size: int = 16
    lr: float = 0.01
    optimizer: str = "sgd"  # sgd (momentum; ssds.pytorch's) | adamw (converges faster from scratch)
    clip_grad: float | None = None  # max gradient L2 norm, None: no clipping
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    hold_fraction: float = 1 / 3  # ssds.pytorch: lr held for the first third, then cosine to 0
    image_size: int = 300
    width_mult: float = 1.0
    out: str = "runs/ssdlite"
    resume: bool = False
    seed: int = 0
    n_train: int = 2000  # synthetic only
    n_val: int = 200
    num_shapes: int = 3
    augment: str = "auto"  # auto (light for synthetic, ssd otherwise) | ssd | light | none
    workers: int = 0
    eval_every: int = 1
    eval_batch_size: int = 32
    gradflow: bool = False
    amp: str = "auto"  # auto | bf16 | fp16 | off
    device: str = "auto"
    time_budget_min: float | None = None  # stop (evaluate, checkpoint) once this many minutes are spent
    progress: bool = True


# --- data ---------------------------------------------------------------------------------------------


def build_datasets(s: TrainSettings) -> tuple[Any, Any, tuple[str, ...]]:
    """(train, val, class names) for ``s.data``; images come out at ``s.image_size``."""
    kind, _, spec = s.data.partition(":")
    train: Any
    val: Any
    if kind == "synthetic":
        train = ShapesDataset(s.n_train, s.image_size, s.num_shapes, seed=s.seed)
        val = ShapesDataset(s.n_val, s.image_size, s.num_shapes, seed=s.seed + 10_007)
        names = train.class_names
    elif kind == "voc":
        if not spec:
            raise TrainError("--data voc:ROOT needs the folder that holds VOCdevkit/")
        train, val = _data(VOCFiles, spec, "train"), _data(VOCFiles, spec, "val")
        names = train.class_names
    elif kind == "coco":
        parts = spec.split(",")
        if len(parts) not in (2, 3):
            raise TrainError("--data coco:IMAGES,ANNOTATIONS[,VAL_ANNOTATIONS]: give the image folder and the instances JSON")
        train = _data(COCOFiles, parts[0], parts[1])
        val = _data(COCOFiles, parts[0], parts[2]) if len(parts) == 3 else train
        names = train.class_names
    else:
        raise TrainError(f"unknown --data {s.data!r}: use synthetic, voc:ROOT or coco:IMAGES,ANNOTATIONS")
    if s.augment not in ("auto", "ssd", "light", "none"):
        raise TrainError(f"unknown --augment {s.augment!r}: use auto, ssd, light or none")
    augment = s.augment if s.augment != "auto" else ("light" if kind == "synthetic" else "ssd")
    if augment in ("ssd", "light"):
        train = Transformed(train, ssd_train_transform(s.image_size, strong=augment == "ssd"))
    elif augment != "none" or kind != "synthetic":
        train = Transformed(train, eval_transform(s.image_size))
    if kind != "synthetic":
        val = Transformed(val, eval_transform(s.image_size))
    return train, val, tuple(names)


def _data(cls: Callable[..., Any], *args: Any) -> Any:
    try:
        return cls(*args)
    except DataError as exc:
        raise TrainError(str(exc)) from exc


# --- schedule ------------------------------------------------------------------------------------------


def lr_factor(progress: float, warmup: float, hold: float) -> float:
    """Multiplier of the base lr at ``progress`` in [0, 1]: linear warm-up from 0.1, hold, cosine to 0."""
    if warmup > 0 and progress < warmup:
        return 0.1 + 0.9 * progress / warmup
    start = max(hold, warmup)
    if progress <= start:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - start) / max(1e-12, 1 - start))))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only: BatchNorm parameters, biases and L2Norm scales are 1-D."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def merge_resume_settings(
    path: Path, given: TrainSettings, explicit: set[str], override: bool
) -> tuple[TrainSettings, SSDLiteConfig, list[str]]:
    """The settings of a resumed run: those stored in ``path`` (last.pth), with the flags given on the command line
    (``explicit``) that differ from them. A difference is refused (TrainError naming each) unless ``override``;
    then the returned notes say what changes (a new ``epochs`` changes the cosine schedule). Also returns the
    stored model configuration, the base to rebuild the same model from."""
    try:
        state = read_checkpoint(path)
        config = config_from_dict(state.get("config") if isinstance(state, dict) else None, f"{path}: config")
    except CheckpointError as exc:
        raise TrainError(str(exc)) from exc
    stored = state.get("settings") if isinstance(state, dict) else None
    if not isinstance(stored, dict):
        raise TrainError(f"{path} stores no training settings: not a checkpoint written by `ssdlite train`")
    fields = {f.name: f for f in dataclasses.fields(TrainSettings)}
    merged = dataclasses.asdict(given)
    for name, value in stored.items():
        if name in fields and name not in explicit and name not in RESUME_FREE:
            current = merged[name]
            same_kind = (value is None or current is None or type(value) is type(current)
                         or (isinstance(current, float) and type(value) is int))
            if not same_kind:
                raise TrainError(f"{path}: stored setting {name} = {value!r:.60} is not a {type(current).__name__}")
            merged[name] = value
    changed = [n for n in sorted(explicit) if n in stored and n not in RESUME_FREE and stored[n] != merged[n]]
    if changed and not override:
        listing = ", ".join(f"--{n.replace('_', '-')} {merged[n]} (stored: {stored[n]})" for n in changed)
        raise TrainError(f"{path} was trained with other settings: {listing}; drop those flags to resume as it was, "
                         "or add --override to change them")
    notes = []
    if "epochs" in changed:
        notes.append(f"--epochs {merged['epochs']} changes the learning-rate schedule (stored: {stored['epochs']}): "
                     "the result differs from an uninterrupted run")
    elif changed:
        notes.append("resuming with changed settings: " + ", ".join(changed))
    try:
        return TrainSettings(**merged), config, notes
    except TypeError as exc:
        raise TrainError(f"{path} stores unusable settings: {exc}") from exc
