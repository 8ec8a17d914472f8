"""The training doctor: ``watch(model, optimizer)`` names the silent errors of the user's own training loop.

The package: ``watch`` (the hooks and the ``Watch`` object), ``context`` (the state checks share), ``checks/`` (one
module per idea, each a ``Check``), ``taps`` (process-wide wrappers of functional losses, dropout, clipping,
GradScaler and load_state_dict), ``series`` (the run in numbers per step: loss, learning rates, gradient norms,
update ratio), ``picture`` (those numbers drawn, ``doctor.plot``), ``report`` (``DoctorReport``: findings cause first,
see ``ssdaudit.core.diagnosis``), ``runner`` (``ssdaudit watch``: a script run in-process with every optimizer it
builds watched), ``parallel`` (how a distributed run trains the optimizer's parameters: DDP wrappers, FSDP2 shards,
DistributedSamplers) and ``ranks`` (the one place that talks across ranks: the job's key-value store, never a
collective).
"""

from __future__ import annotations

from ssdaudit.training.doctor.report import DoctorReport
from ssdaudit.training.doctor.watch import Watch, watch

__all__ = ["DoctorReport", "Watch", "watch"]
