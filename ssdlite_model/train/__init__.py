"""Training SSDLite: data, SGD with warm-up/hold/cosine, atomic checkpoints, exact resume, DDP, AMP, metrics.

``Trainer(settings).fit()`` runs the whole thing; ``ssdlite train`` is a thin wrapper. Under torchrun
(WORLD_SIZE > 1) it trains with DistributedDataParallel (gloo on CPU, nccl on CUDA); rank 0 logs, evaluates
and writes checkpoints.

Resume is exact on CPU: every epoch seeds its own RNG streams from (seed, epoch), and checkpoints are taken at
epoch boundaries, so a run resumed from epoch k replays epochs k+1.. exactly as the uninterrupted run did.

The package: ``settings`` (TrainSettings, data, schedule, resume), ``trainer`` (the loop, checkpoints),
``distributed`` (DDP plumbing), ``progress`` (what a person sees).
"""

from __future__ import annotations

from .distributed import Dist, init_distributed
from .settings import (
    BEST, CHECKPOINT, METRICS, RESUME_FREE, RUN_FILES, Diverged, TrainError, TrainSettings, build_datasets, lr_factor,
    merge_resume_settings, param_groups,
)
from .trainer import Trainer

__all__ = [
    "BEST", "CHECKPOINT", "METRICS", "RESUME_FREE", "RUN_FILES", "Dist", "Diverged", "TrainError", "TrainSettings",
    "Trainer", "build_datasets", "init_distributed", "lr_factor", "merge_resume_settings", "param_groups",
]
