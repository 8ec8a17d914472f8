"""``Check``: the events a check can follow. The ``Watch`` calls only the methods a check overrides."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ssdaudit.training.doctor.context import Context

# The methods a Watch dispatches, in the order they happen in a step.
EVENTS = ("on_attach", "on_detach", "on_module_pre", "on_module_post", "on_loss", "on_loss_value", "on_dropout",
          "on_backward_start", "on_backward_end", "on_clip", "on_step_pre", "on_step_post", "on_load", "on_scheduler",
          "on_scaler_skip")


class Check:
    """One idea, one rule (or two sides of one): override the events it needs."""

    code = ""
    also: tuple[str, ...] = ()  # the other rule codes this check reports (one piece of evidence, several rules)
    # Which forward calls reach on_module_pre/on_module_post (they run for every module call of the step, so a check
    # says what it needs): calls of these module types (None: every module), and root calls (the outermost forward
    # of a step) whatever their type when ``module_roots``.
    module_types: tuple[type, ...] | None = None
    module_roots: bool = True
    # Which inner (non-root) calls of those types reach it, by the call's mode (what a check ignores costs nothing):
    # calls of modules in train mode (False: eval-mode calls only), and calls made with gradients enabled (False:
    # calls under ``torch.no_grad()`` only; a check's pre and post call of one forward see the same mode).
    training_calls: bool = True
    grad_calls: bool = True
    # With ``every > 1``, the inner calls of training-mode modules on steps between checks reach only checks that set
    # this (evidence every forward must give: a DDP wrapper's forward, the count of layers in eval mode); root calls
    # and calls of modules in eval mode always reach every check that wants them.
    every_call: bool = False
    # Set to True by a check that needs no more module calls (it has measured what it measures): the watch stops
    # sending them from the next step.
    module_calls_done: bool = False

    @classmethod
    def wants_module(cls, module_type: type, root: bool) -> bool:
        """Whether a forward call of a module of ``module_type`` (a root call or not) reaches this check."""
        return (root and cls.module_roots) or cls.module_types is None or issubclass(module_type, cls.module_types)

    @classmethod
    def wants_call(cls, module_type: type, root: bool, training: bool, grad: bool, due: bool) -> bool:
        """``wants_module``, and for an inner call by its mode: a module in train mode (``training``), gradients
        enabled (``grad``), on a step whose checks run (``due``; an inner training-mode call between checks reaches
        only a check that sets ``every_call``)."""
        if not cls.wants_module(module_type, root):
            return False
        if root and cls.module_roots:
            return True
        return ((cls.training_calls or not training) and (cls.grad_calls or not grad)
                and (due or not training or cls.every_call))

    def on_attach(self, ctx: Context) -> None:
        """The watch is attached (a check that registers hooks of its own registers them here)."""

    def on_detach(self, ctx: Context) -> None:
        """The watch is detached: remove what ``on_attach`` registered."""

    def on_module_pre(self, ctx: Context, module: nn.Module, args: tuple[Any, ...], root: bool) -> None:
        """Before any module's forward (``root``: no other forward is running)."""

    def on_module_post(self, ctx: Context, module: nn.Module, output: Any, root: bool) -> None:
        """After any module's forward returned ``output`` (``root``: no other forward is running)."""

    def on_loss(self, ctx: Context, name: str, input: torch.Tensor, target: torch.Tensor, options: dict[str, Any]) -> None:
        """A ``torch.nn.functional`` loss (``name``, e.g. ``cross_entropy``) is called, directly or by a loss module;
        ``options``: its other arguments by name (``ignore_index``, ``reduction`` ...)."""

    def on_loss_value(self, ctx: Context, name: str, value: Any) -> None:
        """That functional loss returned ``value`` (a tensor on the device: a scalar, or per element with
        ``reduction="none"``; a check that reads it syncs only on due steps)."""

    def on_dropout(self, ctx: Context, p: float, training: bool) -> None:
        """A functional dropout is called with probability ``p`` and its ``training`` argument."""

    def on_backward_start(self, ctx: Context, param: torch.Tensor) -> None:
        """A backward pass reaches the optimizer's parameters; ``param`` is the first, its ``.grad`` not yet updated."""

    def on_backward_end(self, ctx: Context) -> None:
        """That backward pass has finished."""

    def on_clip(self, ctx: Context, params: list[torch.Tensor], max_norm: float) -> None:
        """``clip_grad_norm_`` is about to clip gradients including some of the optimizer's parameters."""

    def on_step_pre(self, ctx: Context) -> None:
        """``optimizer.step()`` is about to run; ``ctx.events`` holds what happened since the last step."""

    def on_step_post(self, ctx: Context) -> None:
        """``optimizer.step()`` has run (``ctx.step`` not yet incremented)."""

    def on_load(self, ctx: Context, module: nn.Module, strict: bool, result: Any) -> None:
        """``module.load_state_dict`` returned ``result`` (missing_keys, unexpected_keys)."""

    def on_scheduler(self, ctx: Context, scheduler: Any) -> None:
        """A learning-rate scheduler of the optimizer has stepped (``scheduler.last_epoch`` already advanced)."""

    def on_scaler_skip(self, ctx: Context, scaler: Any) -> None:
        """A ``GradScaler`` skipped ``optimizer.step()`` because the scaled gradients held inf/NaN (by design)."""
