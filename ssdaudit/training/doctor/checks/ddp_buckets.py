"""T025: trained parameters that ``DistributedDataParallel``'s reducer does not average.

Local evidence, read at the first steps: DDP registers its module's parameters (and hooks on their gradient
accumulators) when it is built. A parameter set on the module after wrapping (``ddp.module.fc = nn.Linear(...)``)
is in none of its buckets; a model moved to another dtype or device after wrapping (``model.double()``,
``model.to(device)``) has new gradient accumulators, so DDP's hooks never fire; a model re-created (or copied) after
wrapping is trained while DDP wraps the old instance. Either way those gradients are never averaged and the replicas
drift apart without an error.
"""

from __future__ import annotations

import torch
from torch import nn

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.doctor.events import StepEvent
from ssdaudit.training.doctor.parallel import setup_of

FIRST_STEPS = 3

# torch dtypes as DDP's logging data names them (``_get_ddp_logging_data()["dtypes"]``)
_C10_NAMES = {torch.float32: "float", torch.float64: "double", torch.float16: "c10::Half",
              torch.bfloat16: "c10::BFloat16"}


class DdpParametersOutsideBuckets(Check):
    code = "T025"

    def on_step_pre(self, ctx: Context) -> None:
        if ctx.step >= FIRST_STEPS:
            return
        setup = setup_of(ctx)
        if setup is None:
            return
        for ddp in setup.wrappers():
            self._judge(ctx, ddp)
        if ctx.step == 0 and StepEvent.BACKWARD in ctx.events:
            stale = [d for d in (r() for r in setup.elsewhere) if d is not None]
            if stale:
                ctx.report(self.code, f"{ctx.label} trains parameters that no DistributedDataParallel wraps, while a "
                           f"DistributedDataParallel wraps another `{type(stale[0].module).__name__}` with exactly their "
                           "shapes: the model was re-created (or copied) after wrapping, so its gradients are never "
                           "averaged across ranks and the replicas drift apart", subject="replicas",
                           params=sum(p.numel() for p in ctx.params()))

    def _judge(self, ctx: Context, ddp: nn.Module) -> None:
        inner = ddp.module
        assert isinstance(inner, nn.Module)
        registered = {id(p) for p in getattr(ddp, "_module_parameters", ())}
        if not registered:
            return
        ignored = set(getattr(ddp, "parameters_to_ignore", ()))
        trained = [(n, p) for n, p in inner.named_parameters() if id(p) in ctx.trained_ids and n not in ignored]
        outside = [n for n, p in trained if id(p) not in registered]
        name = ctx.name_of(inner)
        if outside:
            shown = ", ".join(f"`{n}`" for n in outside[:4]) + (f" and {len(outside) - 4} more" if len(outside) > 4 else "")
            ctx.report(self.code, f"{len(outside)} trained parameter tensors of `{name}` were set after it was wrapped "
                       f"in DistributedDataParallel ({shown}): they are in none of DDP's buckets, their gradients are "
                       "never averaged across ranks and the replicas drift apart", subject="replicas",
                       params=sum(p.numel() for n, p in trained if n in outside))
            return
        moved = _moved(ddp, [p for _, p in trained])
        if moved:
            ctx.report(self.code, f"`{name}` was moved ({moved}) after it was wrapped in DistributedDataParallel: its "
                       "parameters have new gradient accumulators, DDP's gradient hooks never fire, no gradient is "
                       "averaged across ranks and the replicas drift apart", subject="replicas",
                       params=sum(p.numel() for _, p in trained))


def _moved(ddp: nn.Module, params: list[torch.Tensor]) -> str:
    """How ``params`` left the dtype or device they had when ``ddp`` was built (``float -> double``), else ""."""
    device = getattr(ddp, "device", None)
    if isinstance(device, torch.device) and not getattr(ddp, "is_multi_device_module", False):
        now = {p.device for p in params}
        if now and now != {device}:
            return f"{device} -> {', '.join(sorted(str(d) for d in now))}"
    try:
        logged = ddp._get_ddp_logging_data().get("dtypes", "")  # type: ignore[operator]
    except Exception:
        return ""
    before = {s.strip() for s in str(logged).split(",") if s.strip()}
    now_names = {_C10_NAMES.get(p.dtype, "") for p in params}
    if before and "" not in now_names and not now_names <= before:
        return f"{', '.join(sorted(before))} -> {', '.join(sorted(now_names - before))}"
    return ""
