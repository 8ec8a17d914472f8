"""What a checkpoint the watched script saves lacks for an exact resume (S008, S009): at each ``torch.save`` (or
DCP save) of the run, the saved object is compared with the live training state of every watched optimizer:

* an optimizer with tensor state (momentum buffers, Adam's moments) and no optimizer ``state_dict()`` saved;
* a learning-rate scheduler of that optimizer that has stepped, and no scheduler state saved;
* an enabled GradScaler that has scaled a loss, and no scaler state saved;
* RNG states, when the run draws from them (dropout in training mode, a DataLoader shuffled by the global torch RNG),
  and no torch RNG state saved;
* an epoch or step counter: no integer under a key naming an epoch, step or iteration;
* model weights saved from a wrapper (every key ``module.*``).

Only checkpoints that hold the model's weights (a state dict, or the model) are judged: an object that is not a
checkpoint of this model (a metrics file, a tensor of predictions) is not. State the run does not use is not asked for.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ssdaudit.core.findings import Severity
from ssdaudit.training.resume.fingerprint import RANDOM_MODULES

_COUNTER_WORDS = ("epoch", "step", "iter", "global_step", "batch")


def _walk(obj: Any, depth: int = 0) -> Iterator[Any]:
    yield obj
    if depth >= 4:
        return
    if isinstance(obj, dict):
        for v in list(obj.values())[:10000]:
            if isinstance(v, (dict, list, tuple)):
                yield from _walk(v, depth + 1)
            else:
                yield v
    elif isinstance(obj, (list, tuple)):
        for v in obj[:10000]:
            if isinstance(v, (dict, list, tuple)):
                yield from _walk(v, depth + 1)
            else:
                yield v


def _size(tensors: list[torch.Tensor]) -> str:
    n = sum(t.numel() * t.element_size() for t in tensors)
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n} bytes"


def _has_counter(obj: Any, depth: int = 0) -> bool:
    if isinstance(obj, dict) and depth <= 2:
        for k, v in obj.items():
            if isinstance(k, str) and any(w in k.lower() for w in _COUNTER_WORDS) and isinstance(v, (int, float)) \
                    and not isinstance(v, bool):
                return True
            if isinstance(v, dict) and _has_counter(v, depth + 1):
                return True
    return False


class CheckpointContents:
    """What a saved object holds, found once (``gaps`` judges it against the training state)."""

    def __init__(self, obj: Any, model: nn.Module | None) -> None:
        self.dicts = [x for x in _walk(obj) if isinstance(x, dict)]
        self.values = list(_walk(obj))
        # each piece as its state_dict() or as the object itself (torch.save({"opt": optimizer, ...}) pickles it whole)
        self.optimizer = any("state" in d and "param_groups" in d for d in self.dicts) or any(
            isinstance(v, torch.optim.Optimizer) for v in self.values)
        schedulers = [v for v in self.values if isinstance(v, torch.optim.lr_scheduler.LRScheduler)]
        self.scheduler = any("last_epoch" in d or "base_lrs" in d for d in self.dicts) or bool(schedulers)
        self.scaler = any("scale" in d and "growth_factor" in d for d in self.dicts) or any(
            type(v).__name__ == "GradScaler" and hasattr(v, "state_dict") for v in self.values)
        self.rng = any(isinstance(v, torch.Tensor) and v.dtype is torch.uint8 and v.dim() == 1 and v.numel() >= 5000
                       for v in self.values)  # torch.get_rng_state(): 5056 bytes
        # a scheduler's last_epoch counts its steps, as its state_dict's "last_epoch" key does
        self.counter = _has_counter(obj) or any(hasattr(v, "global_step") for v in self.dicts) or bool(schedulers)
        names = {n for n, _ in model.state_dict().items()} if model is not None else set()
        bare = {n[len("module."):] if n.startswith("module.") else n for n in names}
        self.weights: dict[str, Any] | None = None
        self.wrapped = False
        for d in self.dicts:
            keys = [k for k in d if isinstance(k, str)]
            if not keys or not all(isinstance(d[k], torch.Tensor) for k in keys[:50]):
                continue
            stripped = {k[len("module."):] if k.startswith("module.") else k for k in keys}
            if bare and len(stripped & bare) >= max(1, len(bare) // 2):
                self.weights = d
                self.wrapped = all(k.startswith("module.") for k in keys) and not all(
                    n.startswith("module.") for n in names)
                break
        if self.weights is None and model is not None and any(v is model for v in self.values):
            self.weights = {}


def schedulers_of(optimizer: torch.optim.Optimizer) -> list[Any]:
    """The live learning-rate schedulers of ``optimizer`` (one scan of the garbage collector's objects)."""
    base = torch.optim.lr_scheduler.LRScheduler
    return [o for o in gc.get_objects() if issubclass(type(o), base) and getattr(o, "optimizer", None) is optimizer]


def weights_only(obj: Any, model: nn.Module | None) -> bool:
    """Whether ``obj`` is the model's weights and nothing else (its state_dict, or the model itself): an export
    as often as a checkpoint to resume from."""
    found = CheckpointContents(obj, model)
    return found.weights is not None and (found.weights is obj or obj is model)


def gaps(obj: Any, model: nn.Module | None, optimizer: torch.optim.Optimizer, scaler: Any,
         global_shuffle: bool) -> list[tuple[str, str, str]]:
    """(rule code: S008 or S009, piece, message) for each piece of the training state the run uses and ``obj`` lacks; [] when
    ``obj`` is not a checkpoint of ``model``."""
    found = CheckpointContents(obj, model)
    if found.weights is None:
        return []
    out: list[tuple[str, str, str]] = []
    if not found.optimizer:
        by_key: dict[str, list[torch.Tensor]] = {}
        for state in optimizer.state.values():
            for k, v in state.items():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    by_key.setdefault(k, []).append(v)
        if by_key:
            what = "; ".join(f"{k} of {len(v)} tensors, {_size(v)}" for k, v in sorted(by_key.items()))
            out.append(("S008", "optimizer state", f"the checkpoint holds no state of {type(optimizer).__name__}: "
                        f"{what} are lost, and a resumed run restarts them from zero"))
    stepped = [s for s in schedulers_of(optimizer) if getattr(s, "last_epoch", 0) > 0]
    if stepped and not found.scheduler:
        s = stepped[0]
        out.append(("S008", "scheduler", f"the checkpoint holds no state of the {type(s).__name__} scheduler "
                    f"(at step {s.last_epoch}): a resumed run restarts its schedule"))
    if scaler is not None and not found.scaler:
        out.append(("S008", "GradScaler", f"the checkpoint holds no GradScaler state (scale {float(scaler._scale):g} "
                    "now): a resumed run starts again from its initial scale"))
    random_layers = [n for n, m in (model.named_modules() if model is not None else [])
                     if isinstance(m, RANDOM_MODULES) and m.training and getattr(m, "p", 0.0) > 0]
    if (random_layers or global_shuffle) and not found.rng:
        uses = []
        if random_layers:
            uses.append("dropout " + ", ".join(f"`{n}`" for n in random_layers[:3]))
        if global_shuffle:
            uses.append("a DataLoader shuffled by the global torch RNG")
        out.append(("S008", "RNG states", f"the checkpoint holds no RNG state and the run draws from it "
                    f"({' and '.join(uses)}): a resumed run draws other numbers"))
    if not found.counter and found.weights is not obj and obj is not model:  # a checkpoint, not bare weights
        out.append(("S008", "epoch/step counter", "the checkpoint holds no epoch or step counter: a resumed run "
                    "does not know where it stopped"))
    if found.wrapped:
        out.append(("S009", "module. prefix", "the model's weights are saved with a wrapper's `module.` prefix: the "
                    "bare model does not load them"))
    return out


class SaveCheck:
    """A ``patches`` listener for ``watch``: at each save, the gaps of the saved object against every watched
    optimizer, reported as findings of that optimizer's watch at the script's save line."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.scaler: Any = None
        self.global_shuffle = False

    def on_save(self, obj: Any, target: Any, kind: str) -> None:
        for w in self.runner.watches:
            found = gaps(obj, w.model, w.optimizer, self.scaler, self.global_shuffle)
            if not found:
                continue
            # the weights alone (model.state_dict(), the model): maybe an export, not a checkpoint to resume from:
            # S008 is a note there (its own subject, so that a later checkpoint's warning is not folded into it)
            bare = weights_only(obj, w.model)
            for code, piece, message in found:
                if bare and code == "S008":
                    w.ctx.report(code, f"{message} (a save of the weights alone; if you resume from it, save the "
                                 "rest beside them)", subject=f"{piece}, weights only", severity=Severity.INFO)
                else:
                    w.ctx.report(code, message, subject=piece)

    def on_backward(self, tensor: torch.Tensor) -> None:
        pass

    def on_scale(self, scaler: Any, value: Any) -> None:
        if scaler.is_enabled():
            self.scaler = scaler

    def on_loader_iter(self, loader: Any) -> None:
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, torch.utils.data.RandomSampler) and sampler.generator is None \
                and getattr(loader, "generator", None) is None:
            self.global_shuffle = True

    def on_batch(self, loader: Any) -> None:
        pass
