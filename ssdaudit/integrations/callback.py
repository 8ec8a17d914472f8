"""What the Lightning and Hugging Face callbacks share: one monitored run, findings reported once, and the
decision to stop training on the rules the user names."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ssdaudit.core.findings import Finding, Severity
from ssdaudit.training.gradflow import GradFlowMonitor

logger = logging.getLogger("ssdaudit")

DEFAULT_FAIL_ON = ("G001", "G003")


def unwrap_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside a framework's wrapper (accelerate's AcceleratedOptimizer, Lightning's
    LightningOptimizer): step hooks are registered on it, and the wrapper's step() calls its step()."""
    inner = getattr(optimizer, "optimizer", None)
    return inner if isinstance(inner, torch.optim.Optimizer) else optimizer


class MonitoredRun:
    """A GradFlowMonitor attached for a framework's training run; ``report`` receives the coverage findings once,
    after the first backward, and ``should_stop`` turns true when one of them is in ``fail_on``."""

    def __init__(self, every: int = 1, log_dir: str | Path | None = None, fail_on: tuple[str, ...] = DEFAULT_FAIL_ON,
                 tb_dir: str | Path | None = None, report: Callable[[list[Finding]], None] | None = None) -> None:
        self.every, self.log_dir, self.fail_on, self.tb_dir = every, log_dir, tuple(fail_on), tb_dir
        self.report = report
        self.monitor: GradFlowMonitor | None = None
        self.first: list[Finding] = []  # the coverage findings of the first backward
        self.should_stop = False

    def start(self, model: nn.Module, optimizer: Any) -> GradFlowMonitor:
        self.monitor = GradFlowMonitor(model, unwrap_optimizer(optimizer), every=self.every, log_dir=self.log_dir,
                                       on_findings=self._on_findings, sinks=self._sinks()).attach()
        return self.monitor

    def _sinks(self) -> list[Any]:
        if self.tb_dir is None:
            return []
        from ssdaudit.integrations.tensorboard import TensorBoardSink

        return [TensorBoardSink(self.tb_dir)]

    def _on_findings(self, findings: list[Finding]) -> None:
        self.first = findings
        errors = [f for f in findings if f.severity is Severity.ERROR]
        if errors:
            for f in errors:
                # library code does not print: the "ssdaudit" logger (shown on stderr unless configured otherwise)
                logger.warning("%s %s `%s`: %s (fix: %s)", f.rule, f.name, f.label, f.message, f.fix)
        self.should_stop = any(f.rule in self.fail_on for f in findings)
        if self.report is not None:
            self.report(findings)

    def finish(self) -> list[Finding]:
        """Detach (writing the log and TensorBoard events) and return the findings of the whole run."""
        if self.monitor is None:
            return []
        self.monitor.detach()
        return self.monitor.findings()


class DoctorRun:
    """The training doctor (``ssdaudit.watch``) attached for a framework's training run: started when the framework
    has built its optimizer, its errors logged once at the end, ``findings`` after ``finish``. The frameworks' own
    gradient accumulation and AMP are what the doctor's deliberate patterns allow."""

    def __init__(self, every: int = 1, ignore: tuple[str, ...] = ()) -> None:
        self.every, self.ignore = every, tuple(ignore)
        self.watch: Any = None
        self.findings: list[Finding] = []

    def start(self, model: nn.Module, optimizer: Any) -> None:
        from ssdaudit.training.doctor import watch

        if self.watch is None and optimizer is not None:
            self.watch = watch(model, unwrap_optimizer(optimizer), every=self.every, ignore=self.ignore).attach()

    def observe(self, loss: Any) -> None:
        """Follow gradient flow from ``loss`` too (frameworks whose steps call submodules directly)."""
        if self.watch is not None and self.watch.monitor is not None:
            self.watch.monitor.observe(loss)

    def finish(self) -> list[Finding]:
        if self.watch is None:
            return []
        self.watch.detach()
        self.findings = self.watch.findings()
        for f in self.findings:
            if f.severity is not Severity.INFO:
                logger.warning("%s %s `%s`: %s (fix: %s)", f.rule, f.name, f.label, f.message, f.fix)
        return self.findings
