"""Shared by the overhead benchmarks: one timed training step of this project's SSDLite on the CPU.

``ssdlite_step(config, batch)`` builds the model (seeded), SGD with momentum and the MultiBox loss on synthetic shapes
(``ssdlite_probe``), and returns ``(model, optimizer, step)``: ``step(i)`` runs forward, loss, ``zero_grad``,
backward and ``optimizer.step()`` on the i-th of four fixed batches and returns its wall time in seconds (the batch
is made before the clock starts). gradflow_overhead.py and watch_overhead.py time the same step. The process's CPU
time of the last step (all its threads; on a shared machine less blurred by other jobs than the wall time) is kept
in ``LAST_CPU[0]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

LAST_CPU = [0.0]  # seconds of CPU time of the process in the last timed step (time.process_time)


def ssdlite_step(config: Any, batch: int) -> tuple[nn.Module, torch.optim.Optimizer, Callable[[int], float]]:
    from ssdaudit.registration.ssdlite_adapter import ssdlite_probe
    from ssdlite_model import build_ssdlite

    torch.manual_seed(0)
    model = build_ssdlite(config)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    make_batch, compute_loss = ssdlite_probe(model, batch)
    batches = [make_batch(i) for i in range(4)]

    def step(i: int) -> float:
        images, targets = batches[i % len(batches)]
        cpu, start = time.process_time(), time.perf_counter()
        loss = compute_loss(model(images), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        wall = time.perf_counter() - start
        LAST_CPU[0] = time.process_time() - cpu
        return wall

    return model, opt, step


def timed(fn: Callable[..., Any], seconds: list[float]) -> Callable[..., Any]:
    """``fn``, adding the wall time of each call to ``seconds[0]``: how the overhead benchmarks measure the time
    spent inside hooks, which the step-to-step noise of a shared machine does not blur."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[0] += time.perf_counter() - start

    return wrapper


def time_methods(obj: Any, names: tuple[str, ...], seconds: list[float]) -> None:
    """Replace each method ``names`` of ``obj`` by its ``timed`` version."""
    for name in names:
        setattr(obj, name, timed(getattr(obj, name), seconds))
