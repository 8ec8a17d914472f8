"""Training SSDLite: data, SGD with warm-up/hold/cosine, atomic checkpoints, exact resume, DDP, AMP, metrics.

``Trainer(settings).fit()`` runs the whole thing; ``ssdlite train`` is a thin wrapper. Under torchrun
(WORLD_SIZE > 1) it trains with DistributedDataParallel (gloo on CPU, nccl on CUDA); rank 0 logs, evaluates
and writes checkpoints.

Resume is exact on CPU: every epoch seeds its own RNG streams from (seed, epoch), and checkpoints are taken at
epoch boundaries, so a run resumed from epoch k replays epochs k+1.. exactly as the uninterrupted run did.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ssdaudit.core.errors import first_line

from ..checkpoint import CheckpointError, config_from_dict, config_to_dict, read_checkpoint, weights_of
from ..config import SSDLiteConfig, ssds_voc
from ..data import DataError, collate_detection
from ..detector import SSDLite
from ..loss import MultiBoxLoss, targets_to_fractions
from .distributed import _barrier, init_distributed
from .progress import _ProgressView
from .settings import (
    BEST, CHECKPOINT, METRICS, RUN_FILES, Diverged, TrainError, TrainSettings, build_datasets, lr_factor, param_groups,
)

# --- the trainer ---------------------------------------------------------------------------------------


class Trainer:
    """Builds data, model and optimizer from ``TrainSettings`` and trains; see ``fit``.

    ``model_factory(config) -> SSDLite`` replaces the default builder (the seed story trains its buggy variant
    this way); ``on_epoch(record)`` receives each epoch's metrics.
    """

    def __init__(
        self,
        settings: TrainSettings,
        model_factory: Callable[[SSDLiteConfig], nn.Module] | None = None,
        base_config: SSDLiteConfig | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.s = settings
        self.run_dir = Path(settings.out)
        self.on_epoch = on_epoch
        want = settings.device if settings.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if want not in ("cpu", "cuda"):
            raise TrainError(f"unknown --device {want!r}: use auto, cpu or cuda")
        if want == "cuda" and not torch.cuda.is_available():
            raise TrainError("--device cuda: no CUDA GPU is visible to PyTorch here; use --device cpu")
        if settings.time_budget_min is not None and not settings.time_budget_min > 0:
            raise TrainError(f"--time-budget must be a positive number of minutes, got {settings.time_budget_min}")
        self.device = torch.device(want)
        self.dist = init_distributed(self.device)
        if self.device.type == "cuda" and self.dist.world > 1:
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.train_set, self.val_set, names = build_datasets(settings)
        if len(self.train_set) == 0:
            raise TrainError("the training set is empty")
        base = base_config or ssds_voc()
        self.config = base.replace(
            num_classes=len(names) + 1, image_size=settings.image_size, width_mult=settings.width_mult, class_names=names
        )
        torch.manual_seed(settings.seed)
        self.model = (model_factory or SSDLite)(self.config).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.criterion = MultiBoxLoss(self.config.iou_threshold, self.config.neg_pos_ratio, self.config.variances)
        groups = param_groups(self.model, settings.weight_decay)
        self.optimizer: torch.optim.Optimizer
        if settings.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum)
        elif settings.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(groups, lr=settings.lr)
        else:
            raise TrainError(f"unknown --optimizer {settings.optimizer!r}: use sgd or adamw")
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.net: nn.Module = self.model
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.epoch, self.step, self.elapsed = 0, 0, 0.0
        self.best_map = -1.0
        self.steps_per_epoch = math.ceil(len(self.train_set) / (settings.batch_size * self.dist.world))
        self.total_steps = max(1, self.steps_per_epoch * settings.epochs)

    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.s.amp
        if amp == "off" or (amp == "auto" and self.device.type != "cuda"):
            return None
        if amp == "fp16":
            return torch.float16
        if amp in ("bf16", "auto"):
            return torch.bfloat16
        raise TrainError(f"unknown --amp {amp!r}: use auto, bf16, fp16 or off")

    # --- run directory and checkpoints --------------------------------------------------------------

    def prepare_run_dir(self) -> None:
        """Create RUN_DIR and prove it is writable before any training time is spent. A fresh run refuses a folder
        that already holds a run (its metrics would mix with the old ones); temporary files of a killed write are
        removed."""
        if not self.dist.main:
            return
        from ssdaudit.core.io import stale_temp_files

        ckpt = self.run_dir / CHECKPOINT
        existing = [n for n in RUN_FILES if (self.run_dir / n).exists()]
        if existing and not self.s.resume:
            raise TrainError(f"{self.run_dir} already holds a run ({', '.join(existing)}): pass --resume to continue it, "
                             "or choose another --out")
        if self.s.resume and not ckpt.exists() and not existing:
            raise TrainError(f"nothing to resume: {ckpt} does not exist")
        # --resume where a kill came before the first last.pth (metrics or best.pth written, last.pth not yet):
        # nothing to load, so the run starts from epoch 0 and its metrics lines are replayed (see fit)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in stale_temp_files(self.run_dir, (CHECKPOINT, BEST, METRICS, "training.png")):
                stale.unlink()
            probe = self.run_dir / ".write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise TrainError(f"cannot write to run directory {self.run_dir}: {exc.strerror or exc}") from exc

    def checkpoint(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        numpy_state: Any = np.random.get_state()  # ("MT19937", keys, pos, has_gauss, cached_gaussian)
        rng: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "numpy_pos": int(numpy_state[2]),
            "python": list(random.getstate()[1]),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"step": self.step, "elapsed": self.elapsed, "total_steps": self.total_steps},
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "rng": rng,
            "config": config_to_dict(self.config),
            "settings": dataclasses.asdict(self.s),
            "best_map": self.best_map,
            "metrics": metrics or {},
        }

    def save(self, *names: str, metrics: dict[str, Any] | None = None) -> Path:
        """Write the training state to RUN_DIR/<name> for each name (default last.pth), built once; returns the first."""
        from ssdaudit.core.io import atomic_write

        state = self.checkpoint(metrics)
        paths = [self.run_dir / n for n in names or (CHECKPOINT,)]
        for path in paths:
            try:
                atomic_write(path, lambda f: torch.save(state, f))
            except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
                reason = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:160]
                raise TrainError(
                    f"cannot write checkpoint {path}: {reason} (the previous checkpoint, if any, is intact; free space "
                    "and resume with --resume)"
                ) from exc
        return paths[0]

    def load(self, path: Path) -> None:
        """Restore model, optimizer, schedule position and RNG streams from a trainer checkpoint (checked first)."""
        try:
            state = read_checkpoint(path)
            if not isinstance(state, dict):
                raise CheckpointError(f"{path} is not a trainer checkpoint (a dict), but a {type(state).__name__}")
            missing = [k for k in ("model", "optimizer", "config", "epoch", "step", "rng", "scheduler") if k not in state]
            if missing:
                raise CheckpointError(f"{path} lacks {', '.join(missing)}: not a checkpoint written by `ssdlite train`, "
                                      "so it cannot be resumed")
            saved = config_from_dict(state["config"], f"{path}: config")
            weights = weights_of(state["model"], f"{path}: model")
        except CheckpointError as exc:
            raise TrainError(str(exc)) from exc
        if saved != self.config:
            diff = [f.name for f in dataclasses.fields(SSDLiteConfig) if getattr(saved, f.name) != getattr(self.config, f.name)]
            raise TrainError(f"{path} was trained with a different model configuration ({', '.join(diff)}): resume with the same settings")
        try:
            self.model.load_state_dict(weights)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state.get("scaler") or {})
            self.epoch, self.step = int(state["epoch"]), int(state["step"])
            self.elapsed = float(state["scheduler"]["elapsed"])
            self.best_map = float(state.get("best_map", -1.0))
            rng = state["rng"]
            torch.set_rng_state(rng["torch"])
            np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), int(rng["numpy_pos"]), 0, 0.0))
            random.setstate((3, tuple(int(x) for x in rng["python"]), None))
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
            raise TrainError(f"{path} has a damaged training state ({exc.__class__.__name__}: {first_line(exc, 160)}): "
                             "start a new run with another --out, or resume from a good copy") from exc

    # --- training --------------------------------------------------------------------------------------

    def _loader(self, epoch: int) -> torch.utils.data.DataLoader[Any]:
        g = torch.Generator().manual_seed(self.s.seed * 100_003 + epoch)
        sampler: torch.utils.data.Sampler[int]
        if self.dist.world > 1:
            distributed: torch.utils.data.DistributedSampler[Any] = torch.utils.data.DistributedSampler(self.train_set, seed=self.s.seed, drop_last=False)
            distributed.set_epoch(epoch)
            sampler = distributed
        else:
            sampler = torch.utils.data.RandomSampler(self.train_set, generator=g)
        return torch.utils.data.DataLoader(
            self.train_set, batch_size=self.s.batch_size, sampler=sampler, collate_fn=collate_detection,
            num_workers=self.s.workers, generator=g, drop_last=False, persistent_workers=False,
        )

    def _progress(self) -> float:
        by_steps = self.step / self.total_steps
        budget = self.s.time_budget_min
        return min(1.0, max(by_steps, self.elapsed / (budget * 60)) if budget else by_steps)

    def _set_lr(self) -> float:
        warm = min(self.s.warmup_epochs / max(self.s.epochs, 1), 0.5)
        lr = self.s.lr * lr_factor(self._progress(), warm, self.s.hold_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def train_step(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        size = self.config.image_size
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets_to_fractions(targets, size, size)]
        images = images.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        lr = self._set_lr()
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            loc, conf = self.net(images)
        losses = self.criterion(loc.float(), conf.float(), self.model.priors, targets)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            last = self.run_dir / CHECKPOINT
            kept = (f"{last} keeps the last good epoch" if last.exists()
                    else "no checkpoint was written yet (it diverged in the first epoch)")
            raise Diverged(
                f"the loss became {float(loss.detach())} at epoch {self.epoch + 1}, step {self.step + 1}: training stopped; "
                f"{kept} (lower --lr, or check the data)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.s.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.s.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return {"loss": float(loss.detach()), "loc": float(losses["loc"].detach()), "conf": float(losses["conf"].detach()), "lr": lr}

    def evaluate(self) -> dict[str, Any]:
        from ..evaluate import evaluate_model

        metrics = evaluate_model(self.model, self.val_set, self.s.eval_batch_size, device=self.device)
        return metrics.to_dict()

    def fit(self) -> list[dict[str, Any]]:
        """Train to ``epochs`` (or the time budget); returns the epoch records also written to metrics.jsonl."""
        self.prepare_run_dir()
        if self.s.resume:
            if (self.run_dir / CHECKPOINT).exists():
                self.load(self.run_dir / CHECKPOINT)
            self._trim_metrics()  # from epoch 0 when killed before the first last.pth: every line is replayed
        _barrier(self.dist)
        monitor = None
        if self.s.gradflow:
            from ssdaudit import GradFlowMonitor

            monitor = GradFlowMonitor(self.net, self.optimizer, log_dir=self.run_dir / "gradflow").attach()
        records = []
        view = _ProgressView(self.s.progress and self.dist.main, self.steps_per_epoch)
        try:
            with view:
                while self.epoch < self.s.epochs and not self._out_of_time():
                    record = self._train_epoch(view, monitor)
                    records.append(record)
                    if self.on_epoch:
                        self.on_epoch(record)
        finally:
            if monitor is not None:
                monitor.detach()
            if self.dist.world > 1:
                import torch.distributed as dist

                dist.destroy_process_group()
        if self.dist.main:
            self._plot()
        return records

    def _out_of_time(self) -> bool:
        return self.s.time_budget_min is not None and self.elapsed >= self.s.time_budget_min * 60

    def _train_epoch(self, view: "_ProgressView", monitor: Any) -> dict[str, Any]:
        epoch = self.epoch
        torch.manual_seed(self.s.seed * 1_000_003 + epoch)  # augmentation randomness, per epoch
        np.random.seed((self.s.seed * 1_000_003 + epoch) % 2**32)
        random.seed(self.s.seed * 1_000_003 + epoch)
        self.net.train()
        losses: list[dict[str, float]] = []
        images_seen, t0 = 0, time.perf_counter()
        view.start_epoch(epoch + 1, self.s.epochs)
        try:
            tick = time.perf_counter()
            for images, targets in self._loader(epoch):
                out = self.train_step(images, targets)
                now = time.perf_counter()
                self.elapsed += now - tick  # training time: data loading and steps, not evaluation
                tick = now
                losses.append(out)
                images_seen += len(images) * self.dist.world
                rate = images_seen / max(time.perf_counter() - t0, 1e-9)
                view.advance(out, rate, monitor.summary_line() if monitor else "")
                if self._out_of_time():
                    break
        except DataError as exc:
            raise TrainError(str(exc)) from exc
        self.epoch = epoch + 1
        record: dict[str, Any] = {
            "epoch": self.epoch, "step": self.step,
            "loss": float(np.mean([x["loss"] for x in losses])), "loc": float(np.mean([x["loc"] for x in losses])),
            "conf": float(np.mean([x["conf"] for x in losses])), "lr": losses[-1]["lr"],
            "images_per_s": images_seen / max(time.perf_counter() - t0, 1e-9), "elapsed_s": self.elapsed,
            "losses": [x["loss"] for x in losses],
        }
        last = self.epoch == self.s.epochs or self._out_of_time()
        if self.dist.main and (self.epoch % self.s.eval_every == 0 or last):
            view.note("evaluating")
            m = self.evaluate()
            record.update({"map50": m["map50"], "map50_11pt": m["map50_11pt"], "coco_map": m["coco_map"],
                           "per_class": {k: v["ap50"] for k, v in m["per_class"].items()}})
        if self.dist.main:
            score = float(record.get("map50", -1.0))
            best = score > self.best_map
            if best:
                self.best_map = score
            # last.pth goes last: a kill before it replays this epoch on --resume, which rewrites the metrics line
            # (trimmed back to last.pth's epoch) and best.pth; a kill after it finds both already written.
            self._append_metrics(record)
            if best:
                self.save(BEST, metrics=record)
            self.save(CHECKPOINT, metrics=record)
        _barrier(self.dist)
        view.end_epoch(record, monitor.summary_line() if monitor else "")
        return record

    def _append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _trim_metrics(self) -> None:
        """Keep the metrics lines of the epochs last.pth holds; a line cut short by a kill is dropped (its epoch is
        replayed), with a warning naming the file and line."""
        import sys

        path = self.run_dir / METRICS
        if not path.exists() or not self.dist.main:
            return
        kept = []
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                epoch = json.loads(line)["epoch"]
            except (ValueError, KeyError, TypeError):
                print(f"warning: {path}:{number}: an unreadable metrics line (cut short by a kill?) is dropped; "
                      "its epoch is trained again", file=sys.stderr)
                continue
            if isinstance(epoch, int) and epoch <= self.epoch:
                kept.append(line)
        from ssdaudit.core.io import atomic_write_text

        atomic_write_text(path, "".join(line + "\n" for line in kept))

    def _plot(self) -> None:
        from ..plots import plot_training

        path = self.run_dir / METRICS
        if path.exists():
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            try:
                plot_training(records, self.run_dir / "training.png", title=f"SSDLite training: {self.s.data}")
            except OSError:
                pass  # the plot is a convenience; metrics.jsonl holds the numbers


