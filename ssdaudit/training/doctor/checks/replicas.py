"""T017: DDP replicas whose parameters differ after one of the first steps.

After steps 1 to ``FIRST_STEPS`` each rank all-gathers two numbers (the float64 sum and sum of squares of its
parameters): one small collective per checked step, only when the watched model is a ``DistributedDataParallel``
(a sharded model's ranks hold different shards by design and are not compared).
"""

from __future__ import annotations

import torch

from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context

FIRST_STEPS = 3


def checksum(params: list[torch.Tensor]) -> torch.Tensor:
    """(2,) float64: the sum and the sum of squares of every element of ``params``."""
    device = params[0].device if params else torch.device("cpu")
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for p in params:
        d = p.detach().to(torch.float64)
        total[0] += d.sum()
        total[1] += (d * d).sum()
    return total


class ReplicasDiffer(Check):
    code = "T017"

    def __init__(self) -> None:
        self.enabled: bool | None = None

    def on_step_post(self, ctx: Context) -> None:
        if ctx.step >= FIRST_STEPS:
            return
        import torch.distributed as dist

        if self.enabled is None:
            self.enabled = (ctx.replicated and dist.is_available() and dist.is_initialized()
                            and dist.get_world_size() > 1)
        if not self.enabled or ctx.model is None:
            return
        local = checksum([p for p in ctx.model.parameters()])
        gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, local)
        sums = torch.stack(gathered).cpu()
        spread = (sums - sums[0]).abs().max(dim=0).values
        scale = sums[0].abs().clamp_min(1e-12)
        if bool((spread / scale > 1e-6).any()):
            ranks = [r for r in range(len(sums)) if not torch.allclose(sums[r], sums[0], rtol=1e-6, atol=0.0)]
            ctx.report(self.code, f"after step {ctx.current} the parameters of rank(s) {ranks} differ from rank 0's "
                       f"(parameter sums {', '.join(f'{float(s):.6g}' for s in sums[:, 0])}): gradients are not "
                       "averaged (a forward that bypasses the DDP wrapper?)", subject="replicas")
