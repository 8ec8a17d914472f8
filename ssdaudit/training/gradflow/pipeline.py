"""The one gradflow pipeline of ``ssdaudit gradflow`` and ``ssdaudit check``: build a target under the time budget,
train it for a few monitored steps, analyse the run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ssdaudit.core.errors import DEFAULT_TIMEOUT_S, Deadline, running_user_code
from ssdaudit.core.targets import TargetSpec, importable_from, load_target
from ssdaudit.training.gradflow.analysis import GradflowReport, analyse_gradflow
from ssdaudit.training.gradflow.probe import probe_target


def gradflow_target(target: str, steps: int, input_shape: tuple[int, ...] | None = None, batch_size: int = 2,
                    lr: float = 0.01, log_dir: Path | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                    root: Path | None = None, progress: Callable[[int], None] | None = None) -> GradflowReport:
    """Build ``target`` and run ``steps`` monitored training steps, then analyse them into G-findings.

    Input from the file's ``example_input()`` or ``input_shape`` (elements per dimension); ``batch_size`` images per
    step for this project's SSDLite models; ``lr`` for the default SGD optimizer; ``log_dir`` receives the log;
    ``timeout`` seconds bound building and training together (0: no limit); ``root``: the folder relative specs are
    read from; ``progress(step)`` after each step. Side effects: runs the target's code and ``steps`` optimizer
    steps on the built model. Raises ``LoadError`` (the target), ``TimeLimitExceeded``, ``ProbeError`` (a step)."""
    spec = TargetSpec.parse(target).resolved(root)
    deadline = Deadline(timeout or None)
    with importable_from(root), running_user_code(f"building {target}", deadline):
        loaded = load_target(spec)
    with importable_from(root), running_user_code(f"training {target} for {steps} probe steps", deadline):
        run = probe_target(loaded, steps, input_shape, batch_size, lr, log_dir, progress)
    findings, layers = analyse_gradflow(run)
    return GradflowReport(target, run, findings, layers, [])
