"""``ResumeRunner``: the watch runner (``ssdaudit.training.doctor.runner.Runner``) with per-step fingerprints of every
optimizer it watches, and, in the first run of ``ssdaudit resume``, a copy of the first checkpoint the script saves
at or after optimizer step ``at``.

The fingerprints are taken by hooks on the optimizer (step pre/post) and the model (a forward pre-hook), and by the
calls ``patches`` observes (backward, GradScaler.scale, DataLoader iteration, torch.save, DCP save).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ssdaudit.core.findings import Location
from ssdaudit.training.doctor.context import user_location
from ssdaudit.core import patches as core_patches
from ssdaudit.training.doctor.runner import Runner, StopScript, find_model, rounds_of
from ssdaudit.training.resume import patches
from ssdaudit.training.resume.fingerprint import (
    RANDOM_MODULES, LoaderStart, RunPrints, StepPrint, batch_digest, grad_norm, named_params, optimizer_state_summary,
    param_digests, rng_digests,
)

_ATOMIC_TEMP = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp$")  # ssdaudit.core.io.atomic_write's ".last.pth.XXXX.tmp"


class Fingerprinter:
    """The per-step fingerprints of one optimizer (and the model holding its parameters)."""

    def __init__(self, model: nn.Module | None, optimizer: torch.optim.Optimizer, recorder: "Recorder") -> None:
        self.model, self.optimizer, self.recorder = model, optimizer, recorder
        self.prints = RunPrints(optimizer=type(optimizer).__name__)
        self._handles: list[RemovableHandle] = []
        self._forwarded = False
        self._batch: Any = None
        self._rng: dict[str, int] = {}
        self._loss: torch.Tensor | None = None
        self._lrs: list[float] = []
        self._loader: int | None = None
        self.keep_at: int | None = None  # clone the parameters after this step (the distance at the end)
        self.kept: list[torch.Tensor] | None = None

    def attach(self) -> "Fingerprinter":
        self._handles.append(self.optimizer.register_step_pre_hook(self._pre))
        self._handles.append(self.optimizer.register_step_post_hook(self._post))
        if self.model is not None:
            self._handles.append(self.model.register_forward_pre_hook(self._forward, with_kwargs=True))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @property
    def steps(self) -> int:
        return len(self.prints.steps)

    # --- hooks ---------------------------------------------------------------------------------------

    def _forward(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        if not (torch.is_grad_enabled() and module.training):
            return
        if self._loss is not None:  # a backward ran and no step followed (GradScaler skipped it): a new iteration
            self._reset()
        if self._forwarded:
            return
        self._forwarded = True
        self._batch = batch_digest((args, kwargs))
        self._rng = rng_digests()
        self._loader = self.recorder.last_loader

    def _pre(self, opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        self.recorder.before_step()
        self._lrs = [float(g["lr"]) for g in opt.param_groups]
        if not self.prints.steps and not self.prints.param_names:
            names, params = named_params(self.model, opt)
            self.prints.param_names = names
            self.prints.start_params = param_digests(params)
            self.prints.start_state, self.prints.start_step_count = optimizer_state_summary(opt)
            if self.model is not None:
                self.prints.random_layers = [n or type(m).__name__ for n, m in self.model.named_modules()
                                             if isinstance(m, RANDOM_MODULES) and m.training and getattr(m, "p", 0.0) > 0]

    def _post(self, opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        _, params = named_params(self.model, opt)
        from ssdaudit.training.resume.fingerprint import digest_all

        grad = digest_all([p.grad for p in params])
        scaler = self.recorder.scaler
        scale = None
        if scaler is not None and scaler.is_enabled() and getattr(scaler, "_scale", None) is not None:
            scale = float(scaler._scale)
        loss = self._loss
        rec = StepPrint(
            step=len(self.prints.steps) + 1,
            batch=self._resolve(self._batch),
            loss=float(loss) if loss is not None and loss.numel() == 1 else None,
            lrs=self._lrs,
            grad=self._resolve(grad),
            grad_norm=grad_norm(params),
            params=param_digests(params),
            scale=scale,
            rng=self._rng,
            loader=self._loader,
        )
        self.prints.steps.append(rec)
        if self.keep_at is not None and rec.step == self.keep_at:
            self.kept = [p.detach().clone() for p in params]
        self._reset()

    def _reset(self) -> None:
        self._forwarded, self._batch, self._rng, self._loss, self._loader = False, None, {}, None, None

    @staticmethod
    def _resolve(x: Any) -> int | None:
        if x is None:
            return None
        return int(x) if isinstance(x, int) else int(x.item())

    # --- from the patches ------------------------------------------------------------------------------

    def backward(self, tensor: torch.Tensor) -> None:
        if self._loss is None and tensor.numel() == 1:
            self._loss = tensor.detach().clone()

    def scaled(self, value: Any) -> None:
        if self._loss is None and isinstance(value, torch.Tensor) and value.numel() == 1:
            self._loss = value.detach().clone()


@dataclass
class Capture:
    """The copy of the first checkpoint saved at or after step ``at``: ``path`` (a file or a DCP folder), the step
    it was saved after, the script's line that saved it, the folder it was saved into (``source_dir``) and its copy
    (``dir_copy``, made before the next step), every file saved at that step (``files``)."""

    step: int
    path: Path
    location: Location | None
    source_dir: Path | None
    dir_copy: Path | None = None
    files: list[Path] = field(default_factory=list)
    optimizer_state: dict[str, int] = field(default_factory=dict)
    optimizer_step_count: float | None = None


class Recorder:
    """What the patches report, dispatched to the fingerprinters; the checkpoint capture of the first run."""

    def __init__(self, runner: "ResumeRunner", at: int | None, after: int, copy_dir: Path | None,
                 copy_folder: bool) -> None:
        self.runner, self.at, self.after, self.copy_dir, self.copy_folder = runner, at, after, copy_dir, copy_folder
        self.scaler: Any = None
        self.capture: Capture | None = None
        self.last_loader: int | None = None
        self._loaders: dict[int, int] = {}
        self._pending_dir = False

    def fingerprinters(self) -> list[Fingerprinter]:
        return self.runner.fingerprinters

    def on_backward(self, tensor: torch.Tensor) -> None:
        for f in self.fingerprinters():
            f.backward(tensor)

    def on_scale(self, scaler: Any, value: Any) -> None:
        if scaler.is_enabled():
            self.scaler = scaler
        for f in self.fingerprinters():
            f.scaled(value)

    def _loader_number(self, loader: Any) -> int:
        """Loaders numbered by their dataset (a loader rebuilt every epoch over the same dataset is one stream)."""
        key = id(getattr(loader, "dataset", loader))
        return self._loaders.setdefault(key, len(self._loaders))

    def on_loader_iter(self, loader: Any) -> None:
        from torch.utils.data import DistributedSampler, RandomSampler

        sampler = getattr(loader, "sampler", None)
        batch_sampler = getattr(loader, "batch_sampler", None)
        inner = getattr(batch_sampler, "sampler", None)
        if not isinstance(sampler, (RandomSampler, DistributedSampler)) and inner is not None:
            sampler = inner
        start = LoaderStart(
            step=self.runner.rounds(), loader=self._loader_number(loader), rng=rng_digests(),
            global_shuffle=isinstance(sampler, RandomSampler) and sampler.generator is None,
            sampler=type(sampler).__name__, sampler_epoch=getattr(sampler, "epoch", None))
        for f in self.fingerprinters():
            f.prints.loaders.append(start)

    def on_batch(self, loader: Any) -> None:
        if loader is not None:
            self.last_loader = self._loader_number(loader)

    def on_save(self, obj: Any, target: Any, kind: str) -> None:
        if self.at is None or self.copy_dir is None:
            return
        done = self.runner.rounds()
        cap = self.capture
        if cap is not None and done != cap.step:
            return
        if cap is None and done < self.at:
            return
        name, source = self._name(target, kind)
        dest = self.copy_dir / "files" / name
        n = 1
        while dest.exists():
            n += 1
            dest = self.copy_dir / "files" / f"{n}-{name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if kind == "dcp":
            shutil.copytree(os.fspath(target), dest)
        elif isinstance(target, (str, os.PathLike)) and os.path.isfile(target):
            shutil.copy2(target, dest)
        else:
            patches.original_save()(obj, dest)
        if cap is None:
            cap = self.capture = Capture(done, dest, user_location(), source)
            if self.fingerprinters():
                f = self.fingerprinters()[0]
                cap.optimizer_state, cap.optimizer_step_count = optimizer_state_summary(f.optimizer)
                f.keep_at = done + self.after
            self.runner.steps = done + self.after
            self._pending_dir = self.copy_folder and source is not None
        cap.files.append(dest)

    @staticmethod
    def _name(target: Any, kind: str) -> tuple[str, Path | None]:
        """The checkpoint's file name (an atomic writer's temporary name mapped back) and its folder."""
        path = target if isinstance(target, (str, os.PathLike)) else getattr(target, "name", None)
        if isinstance(path, int):  # a file opened from a descriptor (os.fdopen): its path, where /proc tells
            try:
                path = os.readlink(f"/proc/self/fd/{path}")
            except OSError:
                path = None
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            return ("checkpoint" if kind == "dcp" else "checkpoint.pt"), None
        p = Path(path)
        m = _ATOMIC_TEMP.match(p.name)
        name = m.group("name") if m else p.name
        return name, p.resolve().parent

    def before_step(self) -> None:
        """The folder the checkpoint was saved into is copied once its writes are done: before the next step."""
        if not self._pending_dir:
            return
        self._pending_dir = False
        cap = self.capture
        if cap is None or cap.source_dir is None or self.copy_dir is None:
            return
        dest = self.copy_dir / "dir" / cap.source_dir.name
        shutil.copytree(cap.source_dir, dest, ignore=shutil.ignore_patterns("*.tmp"), dirs_exist_ok=True)
        cap.dir_copy = dest


class ResumeRunner(Runner):
    """``Runner`` with fingerprints: every optimizer gets a ``Fingerprinter`` (its hooks first, so that the step that
    ends the script is recorded too). ``doctor=False`` (the resumed run): fingerprints only, no ``Watch`` and none
    of the doctor's taps (the first run's watch already judged the checkpoints); the run stops after ``steps``
    optimizer steps all the same."""

    def __init__(self, steps: int, at: int | None = None, after: int = 0, copy_dir: Path | None = None,
                 copy_folder: bool = False, keep_at: int | None = None, doctor: bool = True) -> None:
        super().__init__(steps)
        self.keep_at = keep_at
        self.doctor = doctor
        self.fingerprinters: list[Fingerprinter] = []
        self.recorder = Recorder(self, at, after, copy_dir, copy_folder)

    def _on_optimizer(self, opt: torch.optim.Optimizer) -> None:
        if not any(f.optimizer is opt for f in self.fingerprinters):
            model = find_model([p for g in opt.param_groups for p in g["params"]])
            f = Fingerprinter(model, opt, self.recorder)
            f.keep_at = self.keep_at
            self.fingerprinters.append(f.attach())
            if not self.doctor:
                opt.register_step_post_hook(core_patches.compile_disabled(self._stop))
        if self.doctor:
            super()._on_optimizer(opt)

    def _stop(self, _opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        if self.rounds() >= self.steps:
            raise StopScript()

    def attached(self) -> int:
        return len(self.watches) if self.doctor else len(self.fingerprinters)

    def rounds(self) -> int:
        if self.doctor:
            return super().rounds() if self.watches else 0
        return rounds_of([f.steps for f in self.fingerprinters])

    def finish(self) -> None:
        self.recorder.before_step()
        for f in self.fingerprinters:
            f.detach()

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        """The runner's patches inside this run's own (``patches``), both restored after."""
        try:
            with patches.observing(self.recorder), (super().patched() if self.doctor else self.optimizers_seen()):
                yield
        finally:
            self.finish()
