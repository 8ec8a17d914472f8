"""PyTorch Lightning callbacks: ``GradFlowCallback`` (gradient flow during ``trainer.fit``), ``DoctorCallback`` (the
training doctor) and ``ParamsAudit``
(unregistered members, checked at ``setup`` before any time is spent training).

    trainer = L.Trainer(callbacks=[ParamsAudit(), GradFlowCallback(log_dir="runs/gradflow")])
    trainer = L.Trainer(callbacks=[DoctorCallback()])     # the training doctor: T001-T029 and G001-G006
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as exc:
    raise ImportError("ssdaudit.integrations.lightning needs Lightning: pip install 'ssdaudit[lightning]'") from exc

from ssdaudit.core.findings import rules_tagged
from ssdaudit.core.findings import Finding, Severity
from ssdaudit.integrations.callback import DEFAULT_FAIL_ON, DoctorRun, MonitoredRun


class GradFlowCallback(Callback):  # type: ignore[misc]
    """Attach a GradFlowMonitor to the LightningModule and its optimizer at ``on_train_start``.

    The coverage findings (G001-G003) are reported once, right after the first backward, on the console and through
    Lightning's loggers (``ssdaudit/errors``); a finding whose rule is in ``fail_on`` sets ``trainer.should_stop``.
    ``log_dir`` writes the log ``ssdaudit gradflow RUN_DIR`` renders; ``tb_dir`` writes TensorBoard events.
    ``findings`` holds the whole run's findings after ``on_train_end``."""

    def __init__(self, every: int = 1, log_dir: str | Path | None = None, fail_on: tuple[str, ...] = DEFAULT_FAIL_ON,
                 tb_dir: str | Path | None = None) -> None:
        super().__init__()
        self.run = MonitoredRun(every, log_dir, fail_on, tb_dir)
        self.findings: list[Finding] = []
        self._trainer: Any = None
        self.run.report = self._log

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._trainer = trainer
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        self.run.start(pl_module, optimizer)

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
        # training_step may call submodules directly: the loss is a root Lightning always hands over
        if self.run.monitor is not None:
            self.run.monitor.observe(loss)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.run.should_stop:
            trainer.should_stop = True

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.findings = self.run.finish()

    def _log(self, findings: list[Finding]) -> None:
        errors = sum(f.severity is Severity.ERROR for f in findings)
        for logger in getattr(self._trainer, "loggers", []) or []:
            logger.log_metrics({"ssdaudit/errors": float(errors)}, step=0)


class DoctorCallback(Callback):  # type: ignore[misc]
    """Attach the training doctor (``ssdaudit.watch``: T001-T029 and G001-G006) to the LightningModule and its first
    optimizer at ``on_train_start``; ``findings`` after ``on_train_end`` (warnings and errors also go to the
    "ssdaudit" logger). ``accumulate_grad_batches`` and mixed precision are Lightning's deliberate patterns, not
    findings. ``ignore``: rule codes to skip."""

    def __init__(self, every: int = 1, ignore: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.run = DoctorRun(every, ignore)
        self.findings: list[Finding] = []

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.run.start(pl_module, trainer.optimizers[0] if trainer.optimizers else None)

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
        self.run.observe(loss)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.findings = self.run.finish()


class ParamsAudit(Callback):  # type: ignore[misc]
    """Run ``find_unregistered`` on the LightningModule at ``setup``; unregistered modules or parameters (R001,
    R002 errors, or the rules in ``fail_on``) stop the run before training starts."""

    def __init__(self, example_input: Any = None, fail_on: tuple[str, ...] = tuple(sorted(rules_tagged("container")))) -> None:
        super().__init__()
        self.example_input = example_input
        self.fail_on = tuple(fail_on)
        self.findings: list[Finding] = []

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        from ssdaudit.registration.unregistered import find_unregistered

        self.findings = find_unregistered(pl_module, self.example_input)
        failing = [f for f in self.findings if f.rule in self.fail_on and f.severity is Severity.ERROR]
        if failing:
            lines = "; ".join(f"{f.rule} `{f.label}`: {f.message}" for f in failing)
            raise RuntimeError(f"ssdaudit: {type(pl_module).__name__} keeps parameters outside its registry: {lines}")
