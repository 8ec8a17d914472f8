"""A short monitored training run of a model target, for ``ssdaudit gradflow`` and ``ssdaudit check``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from ssdaudit.core.forward_call import call_forward
from ssdaudit.core.errors import LoadError, UsageError, UserError, first_line
from ssdaudit.training.gradflow.log import GradFlowRun, find_log_dir
from ssdaudit.training.gradflow.monitor import GradFlowMonitor
from ssdaudit.training.gradflow.trace import ForwardTrace, ForwardTracer

# --- a short probe run, for the CLI and `ssdaudit check` -------------------------------------------------


def probe_training(
    model: nn.Module,
    steps: int,
    make_batch: Callable[[int], Any],
    compute_loss: Callable[[Any, Any], torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
    log_dir: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> GradFlowRun:
    """Run ``steps`` training steps under a GradFlowMonitor. ``make_batch(step) -> (inputs, targets)``,
    ``compute_loss(output, targets) -> scalar``; ``optimizer`` None (a model with no registered parameter) still
    follows the gradients. The first step's forward and loss run under a ``ForwardTracer``: the run's ``forward``
    holds which modules ran and where the graph was cut (G002's evidence). Raises ``ProbeError`` naming the step when
    the model, the loss or backward fails."""
    from ssdaudit.core.errors import ProbeError

    model.train()
    trace: ForwardTrace | None = None
    with GradFlowMonitor(model, optimizer, log_dir=log_dir) as monitor:
        for step in range(steps):
            inputs, targets = make_batch(step)
            tracer = ForwardTracer(model) if step == 0 else None
            try:
                with tracer if tracer is not None else contextlib.nullcontext():
                    output = call_forward(model, inputs)
                    if tracer is not None:
                        tracer.model_output(output)
                    loss = compute_loss(output, targets)
            except UserError:
                raise
            except Exception as exc:
                raise ProbeError(f"step {step + 1}: {exc.__class__.__name__}: {first_line(exc)}") from exc
            if not isinstance(loss, torch.Tensor) or loss.grad_fn is None:
                raise ProbeError(f"step {step + 1}: the loss does not depend on any tensor that requires grad: nothing to follow")
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            monitor.drop_unapplied_grads()
            try:
                loss.backward()  # type: ignore[no-untyped-call]
            except RuntimeError as exc:
                hint = ""
                if "backward through the graph a second time" in str(exc):
                    hint = (" (the model carries autograd state from the previous step, e.g. an RNN hidden state: "
                            "detach it between steps, or give a compute_loss that does)")
                raise ProbeError(f"step {step + 1}: backward failed: {first_line(exc)}{hint}") from exc
            if tracer is not None:
                trace = tracer.evidence()
            if optimizer is not None:
                optimizer.step()
            if progress is not None:
                progress(step + 1)
    run = monitor.run()
    run.forward = trace
    return run



def default_loss(output: Any, _targets: Any = None) -> torch.Tensor:
    """The sum of the means of the floating-point outputs: every output contributes a gradient."""
    tensors = [t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not tensors:
        raise TypeError("the model returned no floating-point tensor to build a loss from")
    return torch.stack([t.float().mean() for t in tensors]).sum()


def probe_target(loaded: Any, steps: int, input_shape: tuple[int, ...] | None = None, batch_size: int = 2, lr: float = 0.01,
                 log_dir: str | Path | None = None, progress: Callable[[int], None] | None = None) -> GradFlowRun:
    """Probe a ``loading.LoadedTarget``: a model the adapter knows (this project's SSDLite: synthetic shapes and the
    MultiBox loss) trains with its own hooks; other models on ``example_input()`` (or random ``input_shape``) with the file's ``compute_loss(output)`` or
    ``default_loss`` (then ``run.loss_guessed``, unless forward returned a scalar: that is the loss itself); optimizer
    from the file's ``build_optimizer(model)`` or SGD. Raises LoadError on failure."""
    from ssdaudit.core.errors import ProbeError

    from ssdaudit.registration.ssdlite_adapter import training_hooks

    model, module = loaded.model, loaded.module
    hooks = training_hooks(model, batch_size)
    guessed = False
    if hooks is not None:  # a built-in model that brings its own data and loss (this project's SSDLite)
        make_batch, compute_loss = hooks
    else:
        from ssdaudit.registration.loading import probe_input

        example = probe_input(input_shape, loaded.example_input)
        if example is None:
            raise LoadError(f"{loaded.spec}: no example_input() in the file: give --input-shape, e.g. 2,3,224,224")
        user_loss = getattr(module, "compute_loss", None)

        def make_batch(_step: int) -> tuple[Any, None]:
            return example, None

        compute_loss = (lambda output, _t: user_loss(output)) if callable(user_loss) else default_loss
        guessed = not callable(user_loss)
    build_opt = getattr(module, "build_optimizer", None)
    if callable(build_opt):
        try:
            optimizer = build_opt(model)
        except UserError:  # the time limit, or a refusal of ours: not the file's build_optimizer failing
            raise
        except Exception as exc:
            raise LoadError(f"build_optimizer(model) in {loaded.spec} raised {exc.__class__.__name__}: {exc}") from exc
    else:  # no registered parameter at all (everything in plain lists): follow gradients without an optimizer
        if not lr > 0:
            raise UsageError(f"--lr {lr:g}: the learning rate must be a positive number, e.g. --lr 0.01")
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=lr) if params else None
    if log_dir is not None and find_log_dir(log_dir):
        for old in Path(log_dir).glob("chunk_*.npz"):  # a fresh probe replaces an old log, never mixes with it
            old.unlink()
    try:
        run = probe_training(model, steps, make_batch, compute_loss, optimizer, log_dir, progress)
        run.loss_guessed = guessed and not (run.forward is not None and run.forward.returned_scalar)
        return run
    except ProbeError as exc:
        raise LoadError(f"the gradflow probe failed at {exc} (check example_input(), --input-shape or compute_loss)") from exc
