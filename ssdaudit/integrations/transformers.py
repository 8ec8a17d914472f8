"""Hugging Face ``TrainerCallback``s: ``GradFlowCallback`` follows gradient flow during ``Trainer.train()``,
``DoctorCallback`` attaches the training doctor (``callbacks=[DoctorCallback()]``).

    trainer = Trainer(model, args, train_dataset=ds, callbacks=[GradFlowCallback(log_dir="runs/gradflow")])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:
    raise ImportError("ssdaudit.integrations.transformers needs transformers: pip install 'ssdaudit[transformers]'") from exc

from ssdaudit.core.findings import Finding
from ssdaudit.integrations.callback import DEFAULT_FAIL_ON, DoctorRun, MonitoredRun, unwrap_optimizer


class GradFlowCallback(TrainerCallback):  # type: ignore[misc]
    """Attach a GradFlowMonitor to the model and optimizer at ``on_train_begin``; report the coverage findings once
    after the first backward; ``control.should_training_stop`` on a rule in ``fail_on``; ``findings`` after
    ``on_train_end``. ``log_dir`` and ``tb_dir`` as for ``GradFlowMonitor``."""

    def __init__(self, every: int = 1, log_dir: str | Path | None = None, fail_on: tuple[str, ...] = DEFAULT_FAIL_ON,
                 tb_dir: str | Path | None = None) -> None:
        self.run = MonitoredRun(every, log_dir, fail_on, tb_dir)
        self.findings: list[Finding] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                       **kwargs: Any) -> None:
        self.run.start(model, optimizer)

    def on_step_end(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
        monitor = self.run.monitor
        if monitor is not None and monitor.optimizer is None and optimizer is not None:
            monitor.optimizer = unwrap_optimizer(optimizer)  # created after on_train_begin by some Trainer versions
        if self.run.should_stop:
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.findings = self.run.finish()


class DoctorCallback(TrainerCallback):  # type: ignore[misc]
    """Attach the training doctor (``ssdaudit.watch``: T001-T029 and G001-G006) to the model and optimizer when the
    Trainer has built them; ``findings`` after ``on_train_end`` (warnings and errors also go to the "ssdaudit"
    logger). ``gradient_accumulation_steps`` and mixed precision are deliberate patterns, not findings."""

    def __init__(self, every: int = 1, ignore: tuple[str, ...] = ()) -> None:
        self.run = DoctorRun(every, ignore)
        self.findings: list[Finding] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                       **kwargs: Any) -> None:
        self.run.start(model, optimizer)

    def on_step_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                      **kwargs: Any) -> None:
        self.run.start(model, optimizer)  # an optimizer built after on_train_begin (some Trainer versions)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.findings = self.run.finish()
