"""``watch(model, optimizer)``: the training doctor. It observes the user's unchanged loop through hooks only and
names its silent errors (rules T001-T017), with the gradient-flow checks of ``GradFlowMonitor`` (G001-G006).

What it hooks while attached:

* the optimizer: step pre/post hooks, and ``zero_grad`` of that instance (and of the model) wrapped;
* every parameter the optimizer holds: a gradient hook, whose first call in a backward marks the backward (its
  ``.grad`` is still the previous value then) and queues a callback for the backward's end;
* every module's forward (a global forward pre/post hook): the module stack, modes, the first layer's input;
* ``torch.nn.functional`` losses and dropout, ``clip_grad_norm_``, ``GradScaler`` (``taps``), and
  ``Module.load_state_dict(strict=False)`` calls, also those made before the watch (recorded since torch and
  ssdaudit were both imported: ``ssdaudit.training.loads``) into modules of the model;
* the learning rate of every param group, read at each step.

Host syncs happen only on the steps ``every`` selects (the first step included), in the checks that need values.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.hooks import RemovableHandle

from ssdaudit.core.findings import Finding, rule_codes
from ssdaudit.training import loads
from ssdaudit.training.doctor import taps
from ssdaudit.training.doctor.nonfinite_trace import replaying
from ssdaudit.training.doctor.checks import Check, all_checks
from ssdaudit.training.doctor.checks.base import EVENTS
from ssdaudit.training.doctor.context import Context, raise_internal
from ssdaudit.training.doctor.report import DoctorReport
from ssdaudit.training.gradflow.monitor import GradFlowMonitor, _wrapped


class Watch:
    """The doctor attached to one model and optimizer. Use ``with watch(model, opt) as w: ...`` or
    ``w = watch(model, opt).attach()`` ... ``w.detach()``; ``findings()`` at any time."""

    def __init__(self, model: nn.Module | None, optimizer: torch.optim.Optimizer, *, scaler: Any = None,
                 scheduler: Any = None, every: int = 1, ignore: Iterable[str] = (), gradflow: bool = True,
                 early_steps: int = 100, checks: list[Check] | None = None) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"watch(model, optimizer): optimizer must be a torch.optim.Optimizer, got "
                            f"{type(optimizer).__name__}")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"watch(model, optimizer): model must be a torch.nn.Module (or None), got "
                            f"{type(model).__name__}")
        if every < 1:
            raise ValueError("every must be >= 1")
        known, unknown = rule_codes(ignore)
        if unknown:
            raise ValueError(f"unknown rule codes in ignore: {', '.join(unknown)}")
        self.ignore = known
        self.model = _wrapped(model) if model is not None else None
        self.optimizer = optimizer
        self.ctx = Context(self.model, optimizer, every, scaler, scheduler,
                           replicated=isinstance(model, nn.parallel.DistributedDataParallel))
        self.ctx.label = describe(optimizer, type(model).__name__ if model is not None else "")
        self.checks = checks if checks is not None else all_checks()
        for c in self.checks:
            if hasattr(c, "early_steps"):
                c.early_steps = early_steps
        # per event, the checks that override it (the others cost nothing)
        self._by_event = {e: [c for c in self.checks if getattr(type(c), e) is not getattr(Check, e)] for e in EVENTS}
        self.monitor = GradFlowMonitor(self.model, optimizer, every=every) if gradflow and self.model is not None else None
        self.ctx.monitor = self.monitor  # F004 reads its update-to-weight ratios
        self._handles: list[RemovableHandle] = []
        self._param_hooks: dict[int, RemovableHandle] = {}
        self._patched: list[tuple[Any, bool]] = []  # objects whose zero_grad we wrapped, and whether they had their own
        self._in_backward = False
        self._attached = False
        self._scaler_step_pending = False  # scaler.step(optimizer) ran and optimizer.step() has not (yet)

    # --- attach / detach -------------------------------------------------------------------------------

    def attach(self) -> "Watch":
        if self._attached:
            return self
        self._attached = True
        opt = self.optimizer
        self._handles.append(opt.register_step_pre_hook(self._on_step_pre))
        self._handles.append(opt.register_step_post_hook(self._on_step_post))
        self._handles.append(register_optimizer_step_post_hook(self._on_any_step_post))
        self._handles.append(nn.modules.module.register_module_forward_pre_hook(self._on_module_pre))
        self._handles.append(nn.modules.module.register_module_forward_hook(self._on_module_post))
        for obj in (opt, self.model):
            if obj is not None:
                self._wrap_zero_grad(obj)
        self._hook_params()
        taps.listen(self)
        for module, result in loads.recent_loads():  # pretrained weights loaded before the watch was made
            if module is self.model or self.ctx.in_model(module):
                self.tap_load(module, False, result)
        if self.monitor is not None:
            self.monitor.attach()
        self._dispatch("on_attach")
        return self

    def detach(self) -> None:
        if not self._attached:
            return
        self._attached = False
        self._dispatch("on_detach")
        for h in [*self._handles, *self._param_hooks.values()]:
            h.remove()
        self._handles.clear()
        self._param_hooks.clear()
        for obj, had_own in self._patched:
            if had_own:
                obj.zero_grad = obj.__dict__["_ssdaudit_zero_grad"]
                del obj.__dict__["_ssdaudit_zero_grad"]
            else:
                del obj.zero_grad
        self._patched.clear()
        taps.unlisten(self)
        if self.monitor is not None:
            self.monitor.detach()

    def __enter__(self) -> "Watch":
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _wrap_zero_grad(self, obj: Any) -> None:
        had_own = "zero_grad" in obj.__dict__
        original = obj.zero_grad
        if had_own:
            obj.__dict__["_ssdaudit_zero_grad"] = original

        def zero_grad(*args: Any, **kwargs: Any) -> Any:
            self.ctx.events.append("Z")
            return original(*args, **kwargs)

        obj.zero_grad = zero_grad
        self._patched.append((obj, had_own))

    def _hook_params(self) -> None:
        for p in self.ctx.params():
            if id(p) not in self._param_hooks and p.requires_grad:
                self._param_hooks[id(p)] = p.register_hook(self._grad_hook(p))  # type: ignore[no-untyped-call]
        self.ctx.refresh()

    def _grad_hook(self, p: torch.Tensor) -> Any:
        def hook(grad: torch.Tensor) -> None:
            if not self._in_backward:
                self._in_backward = True
                torch.autograd.Variable._execution_engine.queue_callback(self._backward_end)
                self._dispatch("on_backward_start", p)

        return hook

    # --- events ----------------------------------------------------------------------------------------

    def _dispatch(self, event: str, *args: Any) -> None:
        if replaying():  # the doctor's own replay of a step on a copy (F001-F004) is not the user's training
            return
        for c in self._by_event[event]:
            try:
                getattr(c, event)(self.ctx, *args)
            except Exception as exc:  # a bug of ours must not stop the user's training
                if raise_internal():
                    raise
                self.ctx.internal_errors.append(f"{type(c).__name__}.{event}: {exc!r}\n{traceback.format_exc()}")

    def _backward_end(self) -> None:
        self._in_backward = False
        self.ctx.events.append("B")
        self._dispatch("on_backward_end")

    def _on_step_pre(self, _opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._scaler_step_pending = False
        self._unscale_gradflow_row()
        self._hook_params()
        # args are step()'s own, the optimizer first: step(closure) runs its own backward (LBFGS)
        self.ctx.closure_step = (len(args) > 1 and args[1] is not None) or kwargs.get("closure") is not None
        self.ctx.stack.clear()
        self._dispatch("on_step_pre")

    def _on_step_post(self, _opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        self._dispatch("on_step_post")
        self.ctx.step += 1
        self.ctx.events.clear()
        self.ctx.loss_without_graph = 0

    def _on_any_step_post(self, opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        if opt is not self.optimizer:
            self.ctx.events.append("O")  # another optimizer stepped: the backwards before it were its own

    def _on_module_pre(self, module: nn.Module, args: Any) -> None:
        if replaying():
            return
        root = not self.ctx.stack
        self._dispatch("on_module_pre", module, args if isinstance(args, tuple) else (args,), root)
        self.ctx.stack.append(module)

    def _on_module_post(self, module: nn.Module, _args: Any, _output: Any) -> None:
        if replaying():
            return
        stack = self.ctx.stack
        if stack and stack[-1] is module:
            stack.pop()
        elif module in stack:  # a forward raised inside: drop what it left
            del stack[stack.index(module):]

    # --- taps (taps.Listener) --------------------------------------------------------------------------

    def tap_loss(self, name: str, input: torch.Tensor, target: Any, options: dict[str, Any]) -> None:
        if torch.is_grad_enabled() and input.grad_fn is None and not input.requires_grad:
            self.ctx.loss_without_graph += 1
        self._dispatch("on_loss", name, input, target, options)

    def tap_loss_value(self, name: str, value: torch.Tensor) -> None:
        self._dispatch("on_loss_value", name, value)

    def tap_dropout(self, p: float, training: bool) -> None:
        self._dispatch("on_dropout", p, training)

    def tap_clip(self, params: list[torch.Tensor], max_norm: float) -> None:
        if any(id(p) in self.ctx.optimizer_ids for p in params):
            self.ctx.events.append("C")
            self._dispatch("on_clip", params, max_norm)

    def tap_scaler(self, scaler: Any, method: str, optimizer: Any) -> None:
        if self.ctx.scaler is not None and scaler is not self.ctx.scaler:
            return
        if method == "scale":
            self.ctx.events.append("S")
        elif method == "unscale_" and optimizer is self.optimizer:
            self.ctx.events.append("U")
        elif method == "step" and optimizer is self.optimizer:
            self._scaler_step_pending = True
        elif method == "update" and self._scaler_step_pending:
            # GradScaler skipped optimizer.step(): its gradients were inf/NaN by design (the scale is too high and
            # is lowered now). The gradient-flow row of that backward is no finding (G006): drop it.
            self._scaler_step_pending = False
            self.ctx.events.clear()
            self._drop_gradflow_row()
            self._dispatch("on_scaler_skip", scaler)

    # --- GradScaler and the gradient-flow rows ---------------------------------------------------------

    def _unscale_gradflow_row(self) -> None:
        """The gradient-flow monitor recorded this step's gradients at the end of backward: when clipping or
        ``GradScaler.unscale_`` changed them since, it re-reads them, so that G004's rounding test and G005 judge the
        gradients the optimizer sees (only on such steps, and only on the steps the monitor records)."""
        events = self.ctx.events
        if self.monitor is None or "B" not in events:
            return
        last = len(events) - 1 - events[::-1].index("B")
        if "C" in events[last:] or "U" in events[last:]:
            self.monitor.refresh_grads()

    def _drop_gradflow_row(self) -> None:
        mon = self.monitor
        if mon is None or mon._pending_row is None:
            return
        if mon._rows and mon._rows[-1] is mon._pending_row:
            mon._rows.pop()
            mon._row_steps.pop()
        mon._pending_row = None

    def tap_load(self, module: nn.Module, strict: bool, result: Any) -> None:
        self._dispatch("on_load", module, strict, result)

    def tap_scheduler(self, scheduler: Any) -> None:
        if getattr(scheduler, "optimizer", None) is self.optimizer:
            self._dispatch("on_scheduler", scheduler)

    # --- results ---------------------------------------------------------------------------------------

    @property
    def steps(self) -> int:
        """Optimizer steps seen."""
        return self.ctx.step

    @property
    def first_step(self) -> dict[str, int]:
        """Rule code -> the step (1-based) at which it was first reported."""
        return dict(self.ctx.first_step)

    def findings(self) -> list[Finding]:
        """The T findings so far, then the gradient-flow findings (G001-G006), without the ignored codes."""
        found = list(self.ctx.found.values())
        if self.monitor is not None:
            causes = {f.rule for f in found}
            # consequences a T finding already names (one finding, the cause): parameters never updated (G004), and
            # the optimizer's coverage (G003) once parameters were replaced after it was built (T015)
            found += [f for f in self.monitor.findings()
                      if not (f.rule == "G004" and causes & _NO_UPDATE_CAUSES or f.rule == "G003" and "T015" in causes)]
        return [f for f in found if f.rule not in self.ignore]

    def report(self, target: str = "") -> DoctorReport:
        """What has been seen so far as a ``DoctorReport`` (rendered by ``ssdaudit.render``)."""
        return DoctorReport(target, self.steps, self.findings(), self.first_step, list(self.ctx.internal_errors))


# T findings whose consequence is that step() changes no parameter: gradients cleared before it (T002), a learning
# rate of 0 (T004), a backward that reached none of them (T005), updates that round away (T014)
_NO_UPDATE_CAUSES = {"T002", "T004", "T005", "T014"}


def describe(optimizer: torch.optim.Optimizer, model_name: str, number: int = 0) -> str:
    """How findings name an optimizer: ``optimizer 2 (Adam, 1,234 parameters of `G`)`` (``number`` 0: no number)."""
    count = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    of = f" of `{model_name}`" if model_name else ""
    return f"optimizer{f' {number}' if number else ''} ({type(optimizer).__name__}, {count:,} parameters{of})"


def watch(model: nn.Module | None, optimizer: torch.optim.Optimizer, *, scaler: Any = None, scheduler: Any = None,
          every: int = 1, ignore: Iterable[str] = (), gradflow: bool = True, early_steps: int = 100) -> Watch:
    """The training doctor for ``model`` trained by ``optimizer``: use as a context manager around the loop, or call
    ``.attach()``; ``.findings()`` names the loop's silent errors (T001-T017, G001-G006).

    ``scaler``: only this ``GradScaler``'s calls count (default: any). ``scheduler``: named in learning-rate
    findings (the rates are read from the optimizer's param groups, whatever changes them). ``every``: value checks
    that sync with the device run every ``every`` steps. ``ignore``: rule codes never reported (deliberate patterns).
    ``gradflow``: also run ``GradFlowMonitor`` (G001-G006). ``early_steps``: the steps in which a learning-rate
    collapse is reported. Raises ``TypeError`` when ``optimizer`` is not a ``torch.optim.Optimizer`` (or ``model`` not a
    module), ``ValueError`` for ``every < 1`` or an unknown code in ``ignore``.
    """
    return Watch(model, optimizer, scaler=scaler, scheduler=scheduler, every=every, ignore=ignore, gradflow=gradflow,
                 early_steps=early_steps)
