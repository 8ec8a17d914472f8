"""``watch(model, optimizer)``: the training doctor. It observes the user's unchanged loop through hooks only and
names its silent errors (rules T001-T029), with the gradient-flow checks of ``GradFlowMonitor`` (G001-G006).

What it hooks while attached:

* the optimizer: step pre/post hooks, and ``zero_grad`` of that instance (and of the model) wrapped (a layer of the
  patch owner, ``ssdaudit.core.patches``: watches nest and detach in any order);
* every parameter the optimizer holds: a gradient hook, whose first call in a backward marks the backward (its
  ``.grad`` is still the previous value then) and queues a callback for the backward's end;
* every module's forward (a global forward pre/post hook): the module stack, modes, the first layer's input;
* ``torch.nn.functional`` losses and dropout, ``clip_grad_norm_``, ``GradScaler`` (``taps``), and
  ``Module.load_state_dict(strict=False)`` calls, also those recorded before the watch (by an earlier watch,
  ``ssdaudit watch``, or ``ssdaudit.record_loads()``: ``ssdaudit.training.loads``) into modules of the model;
* the learning rate of every param group, read at each step.

Host syncs happen only on the steps ``every`` selects (the first step included): the checks that need values queue
them on the device (``Context.defer``) and they are read together, once, at the end of that ``optimizer.step()``.

Every hook runs outside ``torch.compile`` (``torch.compiler.disable``) and inside a guard: an exception of ours is
noted and disables the check that raised it for the rest of the run (``ctx.internal_errors``), never reaching the
user's code (``SSDAUDIT_RAISE_INTERNAL=1`` re-raises it: the tests). Global module hooks act only for the thread
the watch belongs to (another thread's loop with its own watch is that watch's). A compiled model
(``torch.compile(model)``) is watched through the module it wraps: paths never name ``_orig_mod``.

On those steps it also records the run's numbers (``series``: the losses' values kept on the device, the learning
rates, and which gradient-flow row belongs to the step), read back once when asked for (``series()``, ``plot()``,
``report()``). ``findings()`` lists causes first, their consequences marked (``ssdaudit.core.diagnosis``).
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch._C._dynamo.eval_frame import get_eval_frame_callback  # truthy while code of a compiled region runs
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils._pytree import tree_flatten
from torch.utils.hooks import RemovableHandle

from ssdaudit.core import patches
from ssdaudit.core.diagnosis import fold, merge_places, ordered
from ssdaudit.core.findings import Finding, rule_codes
from ssdaudit.core.guard import describe as describe_error
from ssdaudit.training import loads
from ssdaudit.training.doctor import taps
from ssdaudit.training.doctor.averaged import AveragedCopies, trained_elsewhere
from ssdaudit.training.doctor.events import StepEvent
from ssdaudit.training.doctor.nonfinite_trace import REPLAYS as _REPLAYS, replaying
from ssdaudit.training.doctor.checks import Check, all_checks
from ssdaudit.training.doctor.checks.base import EVENTS
from ssdaudit.training.doctor.context import Context, raise_internal, unwrap_compiled
from ssdaudit.training.doctor.report import DoctorReport
from ssdaudit.training.doctor.series import RunSeries, SeriesRecorder
from ssdaudit.training.gradflow.monitor import GradFlowMonitor, _wrapped
from ssdaudit.training.gradflow.sharded import is_dtensor


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
                           replicated=isinstance(unwrap_compiled(model), nn.parallel.DistributedDataParallel))
        self.ctx.label = describe(optimizer, type(model).__name__ if model is not None else "")
        self.checks = checks if checks is not None else all_checks()
        for c in self.checks:
            if hasattr(c, "early_steps"):
                c.early_steps = early_steps
        # FSDP2 (fully_shard: DTensor parameters): the gradient-flow statistics of sharded tensors need collectives,
        # which the doctor never issues, and gradient hooks on sharded parameters never fire (``_watch_sharded_output``)
        self._sharded = self.ctx.sharded = any(is_dtensor(p) for p in self.ctx.params())
        if gradflow and self._sharded:
            gradflow = False
            self.ctx.notes.append("gradient-flow checks (G001-G006) skipped: the model is sharded (FSDP2) and their "
                                  "statistics need collectives; run GradFlowMonitor on every rank for them")
        self.monitor = GradFlowMonitor(self.model, optimizer, every=every) if gradflow and self.model is not None else None
        self.recorder = SeriesRecorder(self.monitor)  # the run in numbers, for the picture and the JSON report
        # per event, the checks that override it (the others cost nothing)
        self._by_event = {e: [c for c in [*self.checks, self.recorder] if getattr(type(c), e) is not getattr(Check, e)]
                          for e in EVENTS}
        # module events: per (event, type, root, in train mode, gradients enabled, due step)
        self._by_module: dict[tuple[str, type, bool, bool, bool, bool], list[Any]] = {}
        self._lean_types: dict[tuple[type, bool], bool] = {}  # (type, due) -> its inner training calls reach no check
        self._averaged = AveragedCopies()  # unreached parameters updated without gradients: averages, not G002
        self.ctx.monitor = self.monitor  # F004 reads its update-to-weight ratios
        self._handles: list[RemovableHandle] = []
        self._param_hooks: dict[int, RemovableHandle] = {}
        self._patches: list[patches.Handle] = []  # our zero_grad layers on the optimizer and the model
        self._global_hooks: list[Callable[..., Any]] = []
        self._thread = threading.get_ident()
        self._in_backward = False
        self._backward_task = -1  # the autograd graph task of the backward in progress
        self._end_not_queued = False  # ... ran under compiled autograd: its end-of-backward callback never runs
        self._step_open = False  # step()'s pre-hook ran, its post-hook not yet (a step that raised leaves it True)
        self._attached = False
        self._scaler_step_pending = False  # scaler.step(optimizer) ran and optimizer.step() has not (yet)
        self._backward_end_hook: Callable[[], None] = lambda: None  # queued at the start of each backward (attach)

    # --- attach / detach -------------------------------------------------------------------------------

    def attach(self) -> "Watch":
        if self._attached:
            return self
        self._attached = True
        self._thread = threading.get_ident()
        self._backward_end_hook = self._hook(self._backward_end)
        opt = self.optimizer
        self._handles.append(opt.register_step_pre_hook(self._hook(self._on_step_pre)))
        self._handles.append(opt.register_step_post_hook(self._hook(self._on_step_post)))
        self._handles.append(register_optimizer_step_post_hook(self._hook(self._on_any_step_post)))
        for register, hook in ((nn.modules.module.register_module_forward_pre_hook, self._module_pre_hook()),
                               (nn.modules.module.register_module_forward_hook, self._module_post_hook())):
            taps.our_global_hooks.add(id(hook))
            self._global_hooks.append(hook)
            self._handles.append(register(hook))
        self._wrap_zero_grad(opt)
        if self.model is not None:
            self._wrap_zero_grad(self.model, on_class=True)
        self._hook_params()
        taps.listen(self, self._thread)  # also starts the record of loads (held while attached)
        for module, result in loads.recent_loads():  # pretrained weights loaded before the watch was made
            if module is self.model or self.ctx.in_model(module):
                self.tap_load(module, False, result)
        if self.monitor is not None:
            self.monitor.attach(forward_hooks=False)  # its model's forwards come from our global hooks
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
        for hook in self._global_hooks:
            taps.our_global_hooks.discard(id(hook))
        self._global_hooks.clear()
        for patch in self._patches:
            patch.release()
        self._patches.clear()
        taps.unlisten(self)
        if self.monitor is not None:
            self.monitor.detach()

    def __enter__(self) -> "Watch":
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _hook(self, method: Callable[..., Any]) -> Callable[..., Any]:
        """``method`` as a hook: run outside ``torch.compile``, and an exception of ours becomes a note (or is
        re-raised under the test suite), never the user's."""
        name = getattr(method, "__name__", "hook")

        def on_error(exc: Exception) -> None:
            if raise_internal():
                raise exc
            self._note(f"Watch.{name}", exc)

        return patches.compile_skipped(method, on_error)

    def _note(self, what: str, exc: BaseException) -> None:
        if len(self.ctx.internal_errors) < _MAX_NOTES:
            self.ctx.internal_errors.append(describe_error(what, exc))

    def _wrap_zero_grad(self, obj: Any, on_class: bool = False) -> None:
        """Mark ``obj.zero_grad()`` calls in the step log. ``on_class``: the layer goes on ``type(obj)`` and acts
        for ``obj`` only (a model: an attribute of ours on the instance would be pickled by ``torch.save(model)``
        and copied by ``copy.deepcopy``)."""
        events = self.ctx.events

        def make(call_next: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(call_next)
            def zero_grad(*args: Any, **kwargs: Any) -> Any:
                if not on_class or (args and args[0] is obj):
                    try:
                        self._settle_step()
                        events.add(StepEvent.ZERO_GRAD)
                    except Exception as exc:
                        if raise_internal():
                            raise
                        self._note("Watch.zero_grad", exc)
                return call_next(*args, **kwargs)

            return zero_grad

        owner = type(obj) if on_class else obj
        self._patches.append(patches.patch(owner, "zero_grad", make, key=f"ssdaudit.watch.{id(self):x}"))

    def _hook_params(self) -> None:
        for p in self.ctx.params():
            if id(p) not in self._param_hooks and p.requires_grad:
                self._param_hooks[id(p)] = p.register_hook(self._grad_hook(p))  # type: ignore[no-untyped-call]
        self.ctx.refresh()

    def _grad_hook(self, p: torch.Tensor) -> Any:
        def new_backward(grad: torch.Tensor) -> None:
            self._end_missed_backward()
            self._settle_step()
            self._in_backward = True
            self._backward_task = _current_task()
            # compiled autograd runs no callback queued on the engine: that backward's end is marked at the next
            # backward or step() instead
            self._end_not_queued = _compiled_autograd_active()
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_end_hook)
            self._dispatch("on_backward_start", p)

        start = self._hook(new_backward)

        def hook(grad: torch.Tensor) -> None:
            # every parameter's gradient comes here: the common case (this backward already seen) is one frame, one
            # call and two reads. A new backward: another graph task than the one last seen (a backward that raised
            # never ran its end-of-backward callback; the next one still starts afresh)
            if self._in_backward and _current_task() == self._backward_task:
                return None
            return start(grad)  # type: ignore[no-any-return]

        return patches.skip_tracing(hook)

    # --- module calls: every forward call of every module comes here ----------------------------------

    def _lean(self, module_type: type, due: bool) -> bool:
        """Whether an inner call of a ``module_type`` module in train mode with gradients enabled reaches no check
        (pre or post) on a step that is (``due``) or is not due: the module hooks then only keep the stack."""
        key = (module_type, due)
        found = self._lean_types.get(key)
        if found is None:
            found = self._lean_types[key] = module_type.__name__ != "OptimizedModule" and (
                self.monitor is None or module_type is not type(self.monitor.model)) and not any(
                not isinstance(c, Check) or c.wants_call(module_type, False, True, True, due)
                for c in self._by_event["on_module_pre"] + self._by_event["on_module_post"])
        return found

    def _module_pre_hook(self) -> Callable[..., Any]:
        """The global forward pre-hook: an inner call that reaches no check (``_lean``) only pushes the module on the
        stack, in this one frame; any other call goes through ``_on_module_pre``."""
        full = self._hook(self._on_module_pre)
        ctx, lean, thread = self.ctx, self._lean_types, self._thread

        def module_pre(module: nn.Module, args: Any) -> Any:
            stack = ctx.stack
            if (stack and module.training and lean.get((type(module), ctx.step % ctx.every == 0))
                    and _grad_enabled() and not _REPLAYS[0] and threading.get_ident() == thread
                    and not get_eval_frame_callback()):
                stack.append(module)
                return None
            return full(module, args)

        return patches.skip_tracing(module_pre)

    def _module_post_hook(self) -> Callable[..., Any]:
        """The global forward hook: the lean calls pop the stack here (the same test as the pre-hook's); the others
        go through ``_on_module_post``."""
        full = self._hook(self._on_module_post)
        ctx, lean, thread = self.ctx, self._lean_types, self._thread

        def module_post(module: nn.Module, args: Any, output: Any) -> Any:
            stack = ctx.stack
            if (len(stack) > 1 and stack[-1] is module and module.training
                    and lean.get((type(module), ctx.step % ctx.every == 0)) and _grad_enabled()
                    and not _REPLAYS[0] and threading.get_ident() == thread and not get_eval_frame_callback()):
                stack.pop()
                return None
            return full(module, args, output)

        return patches.skip_tracing(module_post)

    # --- events ----------------------------------------------------------------------------------------

    def _dispatch(self, event: str, *args: Any) -> None:
        if replaying():  # the doctor's own replay of a step on a copy (F001-F004) is not the user's training
            return
        self._call(self._by_event[event], event, args)

    def _module_checks(self, event: str, module: nn.Module, root: bool) -> list[Any]:
        """The checks a forward call of ``module`` reaches (``Check.wants_call``), per module type and call mode: a
        call of a plain layer in a training forward costs only the checks that look at such calls (often none), and
        with ``every > 1`` an inner call of a training-mode layer on a step between checks only the checks that need
        every call (the others judge the forwards of due steps: a sample of the run's forwards)."""
        ctx = self.ctx
        key = (event, type(module), root, module.training, torch.is_grad_enabled(), ctx.step % ctx.every == 0)
        found = self._by_module.get(key)
        if found is None:
            found = self._by_module[key] = [c for c in self._by_event[event]
                                            if not isinstance(c, Check) or c.wants_call(*key[1:])]
            self._lean(type(module), key[5])
        return found

    def _retire_module_calls(self) -> None:
        """Checks that set ``module_calls_done`` get no more module calls."""
        done = [c for c in self._by_event["on_module_pre"] + self._by_event["on_module_post"]
                if isinstance(c, Check) and c.module_calls_done]
        if done:
            for event in ("on_module_pre", "on_module_post"):
                self._by_event[event] = [c for c in self._by_event[event] if c not in done]
            self._by_module.clear()
            self._lean_types.clear()

    def _call(self, checks: list[Any], event: str, args: tuple[Any, ...]) -> None:
        ctx = self.ctx
        for c in checks:
            try:
                getattr(c, event)(ctx, *args)
            except Exception as exc:  # a bug of ours must not stop the user's training: that check stops instead
                if raise_internal():
                    raise
                self._disable(c, event, exc)

    def _disable(self, check: Check, event: str, exc: Exception) -> None:
        """Take ``check`` out of every event for the rest of the run, with a note naming the internal error."""
        # new lists, not removals: a dispatch may be iterating over the old ones (the next check still runs)
        self._by_event = {e: [c for c in cs if c is not check] for e, cs in self._by_event.items()}
        self._by_module.clear()
        self._lean_types.clear()
        code = f" ({check.code})" if check.code else ""
        self._note(f"{type(check).__name__}{code} disabled for the rest of the run after an internal error in "
                   f"{event}", exc)

    def _read_deferred(self) -> None:
        """The values the checks queued this step (``Context.defer``), read in one host sync; a failing callback
        is recorded as the internal error it is."""
        try:
            self.ctx.read_deferred()
        except Exception as exc:
            if raise_internal():
                raise
            self.ctx._deferred.clear()
            self._note("deferred read", exc)

    def _end_missed_backward(self) -> None:
        """A backward run by compiled autograd is over when the next backward or ``step()`` comes: its end, which
        the engine's callback never marked, is marked now."""
        if self._in_backward and self._end_not_queued:
            self._backward_end()

    def _backward_end(self) -> None:
        self._in_backward = False
        self._end_not_queued = False
        self.ctx.events.add(StepEvent.BACKWARD)
        self._dispatch("on_backward_end")

    def _settle_step(self) -> None:
        """A ``step()`` whose pre-hook ran but that raised (its post-hook never came): the events of that step are
        over; the step did not happen (``ctx.step`` unchanged), the next one starts afresh."""
        if self._step_open:
            self._step_open = False
            self.ctx.events.clear()
            self.ctx.loss_without_graph = 0

    def _on_step_pre(self, _opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._end_missed_backward()
        self._settle_step()
        self._step_open = True
        self._scaler_step_pending = False
        self._unscale_gradflow_row()
        if self.monitor is not None:
            self._averaged.snapshot(self.monitor)
        self._hook_params()
        # args are step()'s own, the optimizer first: step(closure) runs its own backward (LBFGS)
        self.ctx.closure_step = (len(args) > 1 and args[1] is not None) or kwargs.get("closure") is not None
        self.ctx.stack.clear()
        self._dispatch("on_step_pre")
        # the values the checks queued so far this step, in one read before the update runs (the non-finite guard
        # replays the step on these weights); what on_step_post queues is read after the update
        self._read_deferred()

    def _on_step_post(self, _opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        self._step_open = False
        self._dispatch("on_step_post")
        self._read_deferred()
        self._retire_module_calls()
        self.ctx.step += 1
        self.ctx.events.clear()
        self.ctx.loss_without_graph = 0

    def _on_any_step_post(self, opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        if opt is not self.optimizer and taps.owns_thread(self, threading.get_ident()):
            self.ctx.events.add(StepEvent.OTHER_STEP)  # another optimizer stepped: the backwards before it were its own

    def _on_module_pre(self, module: nn.Module, args: Any) -> None:
        # on every module call: the common case (no replay, this watch's thread, no compiled wrapper) reads little
        if _REPLAYS[0] and replaying():
            return
        if threading.get_ident() != self._thread and not taps.owns_thread(self, threading.get_ident()):
            return  # another thread's loop
        if type(module).__name__ == "OptimizedModule" and unwrap_compiled(module) is not module:
            return  # torch.compile's wrapper: the module it wraps has its own call
        root = not self.ctx.stack
        checks = self._module_checks("on_module_pre", module, root)
        if checks:
            self._call(checks, "on_module_pre", (module, args if isinstance(args, tuple) else (args,), root))
        self.ctx.stack.append(module)
        if self.monitor is not None and module is self.monitor.model:
            self.monitor.forward_pre(module, args)

    def _on_module_post(self, module: nn.Module, _args: Any, output: Any) -> None:
        if (_REPLAYS[0] and replaying()) or (threading.get_ident() != self._thread
                                             and not taps.owns_thread(self, threading.get_ident())):
            return
        stack = self.ctx.stack
        if stack and stack[-1] is module:
            stack.pop()
        elif module in stack:  # a forward raised inside: drop what it left
            del stack[stack.index(module):]
        checks = self._module_checks("on_module_post", module, not stack)
        if checks:
            self._call(checks, "on_module_post", (module, output, not stack))
        if self.monitor is not None and module is self.monitor.model:
            self.monitor.forward_post(module, _args, output)
        if self._sharded and not stack and module is self.model:
            self._watch_sharded_output(output)

    def _watch_sharded_output(self, output: Any) -> None:
        """FSDP2 computes with gathered copies of its sharded parameters, so the gradient hooks on the optimizer's
        (sharded) parameters never fire: a backward is marked when it reaches the root forward's outputs instead."""
        if not torch.is_grad_enabled():
            return
        params = [p for p in self.ctx.params() if id(p) in self.ctx.trained_ids]
        if not params:
            return
        mark = self._grad_hook(params[0])
        for t in tree_flatten(output)[0]:
            if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                t.register_hook(mark)  # type: ignore[no-untyped-call]

    def tap_failed(self, method: str, exc: Exception) -> None:
        self._note(f"Watch.{method}", exc)

    # --- taps (taps.Listener) --------------------------------------------------------------------------

    def tap_loss(self, name: str, input: torch.Tensor, target: Any, options: dict[str, Any]) -> None:
        if torch.is_grad_enabled() and input.grad_fn is None and not input.requires_grad:
            self.ctx.loss_without_graph += 1
        self._dispatch("on_loss", name, input, target, options)

    def tap_loss_value(self, name: str, value: Any) -> None:
        self._dispatch("on_loss_value", name, value)

    def tap_dropout(self, p: float, training: bool) -> None:
        self._dispatch("on_dropout", p, training)

    def tap_clip(self, params: list[torch.Tensor], max_norm: float) -> None:
        if any(id(p) in self.ctx.optimizer_ids for p in params):
            self.ctx.events.add(StepEvent.CLIP)
            self._dispatch("on_clip", params, max_norm)

    def tap_scaler(self, scaler: Any, method: str, optimizer: Any) -> None:
        if self.ctx.scaler is not None and scaler is not self.ctx.scaler:
            return
        if method == "scale":
            self.ctx.events.add(StepEvent.SCALE)
        elif method == "unscale_" and optimizer is self.optimizer:
            self.ctx.events.add(StepEvent.UNSCALE)
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
        after = self.ctx.events.after_last(StepEvent.BACKWARD)
        if self.monitor is None or after is None:
            return
        if StepEvent.CLIP in after or StepEvent.UNSCALE in after:
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
        """The findings so far (T001-T029, and the gradient-flow findings G001-G006 with the optimizer step they
        were seen at), without the ignored codes: one per rule and place (per-layer findings of one rule merged,
        ``Finding.parts``), cause first, each consequence marked with the code of its cause (``caused_by``; see
        ``ssdaudit.core.diagnosis``). In a distributed run, rank 0's include what the other ranks found and saw
        (``_merge_ranks``)."""
        self._merge_ranks()
        self._read_deferred()
        found = list(self.ctx.found.values())
        if self.monitor is not None:
            monitor_findings = trained_elsewhere(self._averaged.filter(self.monitor.findings()), self.model)
            found += [self._when_seen(f) for f in monitor_findings]
        if self.ignore:  # an ignored cause takes the consequences that only restate it along (G003, G004)
            found = [f for f in fold(found) if f.rule not in self.ignore
                     and not (f.caused_by in self.ignore and f.rule in _RESTATED)]
        return ordered(fold(merge_places(found)))

    def _when_seen(self, f: Finding) -> Finding:
        """A gradient-flow finding with its optimizer step: the step of its gradient-flow row (G005 exploding,
        G006), the first step for the coverage found at the first backward (G001-G003), None for a whole-run
        judgement (G004, G005 vanishing)."""
        row = f.facts.get("row")
        if isinstance(row, int):
            return replace(f, step=self.recorder.optimizer_step(row, self.ctx.current))
        if f.rule in ("G001", "G002", "G003"):
            return replace(f, step=min(self.recorder.rows.values(), default=1))
        return f

    def series(self) -> RunSeries:
        """The run in numbers per recorded optimizer step (loss, learning rates, gradient norms, update ratio)."""
        return self.recorder.series(self.ctx.label)

    def _merge_ranks(self) -> None:
        """The checks with a ``merge(ctx)`` (cross-rank evidence: ``checks.replicas``) merge what the other ranks
        posted; an internal error there is recorded like any check's."""
        for c in self.checks:
            merge = getattr(c, "merge", None)
            if merge is None:
                continue
            try:
                merge(self.ctx)
            except Exception as exc:
                if raise_internal():
                    raise
                self._note(f"{type(c).__name__}.merge", exc)

    def report(self, target: str = "") -> DoctorReport:
        """What has been seen so far as a ``DoctorReport`` (rendered by ``ssdaudit.render``)."""
        return DoctorReport(target, self.steps, self.findings(), self.first_step, list(self.ctx.internal_errors),
                            list(self.ctx.notes), series=[self.series()])

    def plot(self, path: str | Path) -> Path:
        """Draw the run (``doctor.picture.plot_run``: per optimizer step the loss, learning rates, gradient norms
        and update ratio, each finding's step marked with its code) to the PNG ``path``, written atomically.
        PNG, PDF or SVG by the suffix. Returns the path; raises ``ValueError`` for another suffix,
        ``FileNotFoundError`` when its folder does not exist, ``OSError`` when it cannot be written, ``ModuleNotFoundError`` without
        matplotlib."""
        from ssdaudit.training.doctor.picture import plot_run

        return plot_run(self.report(), path)


_MAX_NOTES = 20  # internal-error notes kept per watch

_grad_enabled = torch.is_grad_enabled


def _compiled_autograd_active() -> bool:
    """Whether the backward running now is compiled autograd's (``torch._dynamo.compiled_autograd``)."""
    ca = sys.modules.get("torch._dynamo.compiled_autograd")
    return ca is not None and bool(getattr(ca, "compiled_autograd_enabled", False)
                                   or getattr(ca, "in_compiled_autograd_region", False))
# the id of the autograd graph task running a hook (-1 where torch cannot tell)
_current_task: Callable[[], int] = getattr(torch._C, "_current_graph_task_id", lambda: -1)



# Consequences that only restate their cause (the parameters it concerns do not change, or are not the optimizer's):
# ignoring the cause ignores them too. The others (G005, G006: what the run went on to do) are then reported alone.
_RESTATED = {"G003", "G004"}


def describe(optimizer: torch.optim.Optimizer, model_name: str, number: int = 0) -> str:
    """How findings name an optimizer: ``optimizer 2 (Adam, 1,234 parameters of `G`)`` (``number`` 0: no number)."""
    count = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    of = f" of `{model_name}`" if model_name else ""
    return f"optimizer{f' {number}' if number else ''} ({type(optimizer).__name__}, {count:,} parameters{of})"


def watch(model: nn.Module | None, optimizer: torch.optim.Optimizer, *, scaler: Any = None, scheduler: Any = None,
          every: int = 1, ignore: Iterable[str] = (), gradflow: bool = True, early_steps: int = 100) -> Watch:
    """The training doctor for ``model`` trained by ``optimizer``: use as a context manager around the loop, or call
    ``.attach()``; ``.findings()`` names the loop's silent errors (T001-T029, G001-G006).

    ``scaler``: only this ``GradScaler``'s calls count (default: any). ``scheduler``: named in learning-rate
    findings (the rates are read from the optimizer's param groups, whatever changes them). ``every``: value checks
    that sync with the device run every ``every`` steps. ``ignore``: rule codes never reported (deliberate patterns).
    ``gradflow``: also run ``GradFlowMonitor`` (G001-G006). ``early_steps``: the steps in which a learning-rate
    collapse is reported. Raises ``TypeError`` when ``optimizer`` is not a ``torch.optim.Optimizer`` (or ``model`` not a
    module), ``ValueError`` for ``every < 1`` or an unknown code in ``ignore``.
    """
    return Watch(model, optimizer, scaler=scaler, scheduler=scheduler, every=every, ignore=ignore, gradflow=gradflow,
                 early_steps=early_steps)
