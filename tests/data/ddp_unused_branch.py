"""Run by torchrun in tests: a DDP model with an unused branch; the monitor must name it before DDP fails."""

import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from ssdaudit import GradFlowMonitor


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.unused = nn.Linear(4, 4)  # defined, never called: DDP's classic failure
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(Net())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    log_dir = sys.argv[1]

    def report(findings):
        if rank == 0:
            print("FINDINGS " + json.dumps([f.to_dict() for f in findings]), flush=True)

    monitor = GradFlowMonitor(model, opt, log_dir=log_dir, on_findings=report).attach()
    steps_done = 0
    try:
        for _ in range(3):
            loss = model(torch.rand(8, 4)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps_done += 1
    except RuntimeError as exc:
        if rank == 0:
            print("DDP-ERROR " + str(exc).splitlines()[0], flush=True)
    monitor.detach()
    if rank == 0:
        print(f"STEPS {steps_done}", flush=True)
    dist.destroy_process_group()
    os._exit(0)


if __name__ == "__main__":
    main()
