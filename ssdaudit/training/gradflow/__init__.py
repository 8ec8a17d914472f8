"""Where gradients go during training, and where they never arrive.

``GradFlowMonitor(model, optimizer)`` hooks a training loop (no change to the loop itself):

* the model's outputs get a gradient hook; when backward reaches them, the autograd graph is walked once
  (``grad_fn`` -> ``next_functions`` -> ``AccumulateGrad.variable``) to find every leaf tensor that receives a
  gradient, and a callback is queued to run when backward has finished;
* after each backward (every ``every`` steps) per-tensor gradient L2 norm, max |g| and L1 norm are computed in
  bulk with ``torch._foreach_norm`` and kept on the device, so no host sync happens per parameter;
* around ``optimizer.step()`` (step pre/post hooks) the update-to-weight ratio ||w' - w|| / ||w'||;
* rows are written in chunks (``chunk_000000.npz`` + ``index.json``, each written atomically) to ``log_dir``.

``analyse_gradflow(run)`` turns a log (live or read back with ``read_gradflow_log``) into findings G001-G006.

The package: ``monitor`` (the hooks), ``log`` (the on-disk log and reading it back), ``analysis`` (findings and
the per-layer table), ``probe`` (a short training run of a model target).
"""

from __future__ import annotations

from ssdaudit.training.gradflow.analysis import GradflowReport, LayerStats, analyse_gradflow, coverage_findings, layer_stats
from ssdaudit.training.gradflow.log import LOG_VERSION, STAT_FIELDS, UNREGISTERED, GradFlowRun, TrackedTensor, find_log_dir, read_gradflow_log
from ssdaudit.training.gradflow.monitor import GradFlowMonitor, autograd_leaves
from ssdaudit.training.gradflow.probe import default_loss, probe_target, probe_training

__all__ = [
    "GradFlowMonitor", "GradFlowRun", "GradflowReport", "LayerStats", "LOG_VERSION", "STAT_FIELDS", "TrackedTensor", "UNREGISTERED",
    "analyse_gradflow", "autograd_leaves", "coverage_findings", "default_loss", "find_log_dir", "layer_stats",
    "probe_target", "probe_training", "read_gradflow_log",
]
