"""The probe plan: where the forward probe of a model runs, and the one fallback when it fails on the meta device.

A model built on the meta device is probed there first. When that fails (``.item()``, a data-dependent shape, an
operator without a meta kernel: nothing about the model), the plan ("auto") probes again on a CPU copy with random
weights when it fits the memory budget and a CPU build is at hand (``ProbeOptions.build_cpu``: ``ssdaudit params``
and ``ssdaudit check`` have the target's loader), else on a CPU copy with placeholder weights
(``placeholder.placeholder_copy``: shared memory, allocations bounded by the budget). A probe that runs past the
time limit leaves the meta run standing. "meta" never leaves meta; "cpu" always probes a CPU build.

``find_unregistered`` (and through it ``audit_params``, the pytest plugin's fixture, the Lightning callback),
``ssdaudit params`` and ``ssdaudit check`` all go through ``probe_plan``. The outcome is evidence: the findings of
the probe that counts, its ``ProbeStatus`` and the ``ProbePlacement`` the report shows.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ContextManager

from torch import nn

from ssdaudit.core.errors import TimeLimitExceeded, UsageError, UserError
from ssdaudit.core.findings import Finding
from ssdaudit.registration.evidence import ProbeStatus
from ssdaudit.registration.probe_device import (BUILT_THERE, PROBE_DEVICES, ProbePlacement, human_bytes, meta_reason,
                                                over_budget)
from ssdaudit.registration.inspection import Inspection, inspect_unregistered
from ssdaudit.registration.model_index import ModelIndex
from ssdaudit.registration.rules.n004_probe_incomplete import with_meta_hint

Guard = Callable[[str], ContextManager[None]]
_META_ONLY_HINT = "--probe-device auto or cpu runs it on a CPU copy with random weights"
_TIMEOUT_HINT = "raise --timeout to let the probe finish on a CPU copy with placeholder weights"


def _no_guard(_label: str) -> ContextManager[None]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class ProbeOptions:
    """How to probe. ``probe_device``: "auto", "meta" or "cpu" (see the module's text); ``budget``: bytes a CPU copy
    may use (None: half the memory available); ``build_cpu``: builds the model on the CPU with random weights and
    returns it with its example input (None: no such build, the fallback uses placeholder weights); ``guard``: the
    context each run of the model's code goes under, given a label ("probing NAME's forward": a time limit, stdout
    to stderr); ``name``: the model's name in messages; ``built_on``: "meta" or "cpu", None: from its parameters."""

    probe_device: str = "auto"
    budget: int | None = None
    build_cpu: Callable[[], tuple[nn.Module, Any]] | None = None
    guard: Guard | None = None
    name: str = "the model"
    built_on: str | None = None


@dataclass(frozen=True)
class PlanOutcome:
    """The probe that counts: the model it ran on (a CPU copy after a fallback) and its input, its findings and
    status, where it ran and why (for the report), and that model's index (the walk the rules judged, reused by
    the audit). ``sizes_from``: the meta model whose state_dict gives the checkpoint bytes when ``model`` is a
    placeholder copy. ``timed_out``: a fallback ran past the time limit (what follows is not the probe's to
    bound)."""

    model: nn.Module
    example: Any
    findings: tuple[Finding, ...]
    status: ProbeStatus
    placement: ProbePlacement
    index: ModelIndex
    sizes_from: nn.Module | None = None
    timed_out: bool = False


def probe_plan(model: nn.Module, example: Any, options: ProbeOptions = ProbeOptions()) -> PlanOutcome:
    """Probe ``model`` on ``example`` (None: no probe, an N003 note) following the plan.

    Raises ``UsageError`` for a bad ``probe_device``, for "cpu" without ``build_cpu`` or over the budget;
    whatever ``guard`` and ``build_cpu`` raise (a time limit, a load error); never for a forward that fails."""
    if options.probe_device not in PROBE_DEVICES:
        raise UsageError(f"bad probe_device {options.probe_device!r}: give auto, meta or cpu")
    guard = options.guard or _no_guard
    on_meta = (options.built_on == "meta" if options.built_on is not None
               else any(t.is_meta for t in model.parameters()))
    if on_meta and options.probe_device == "cpu":
        return _on_cpu_by_request(model, options, guard)
    pristine = _pristine(model) if on_meta and options.probe_device == "auto" and example is not None else None
    first = _probe(model, example, guard, f"probing {options.name}'s forward")
    placement = ProbePlacement("meta" if on_meta else "cpu", BUILT_THERE)
    if example is None:
        return _outcome(model, None, first, ProbePlacement("none", "no example input"))
    failure = first.status.failure if on_meta else None
    if failure is None:
        return _outcome(model, example, first, placement)
    why = meta_reason(failure)
    if options.probe_device == "meta":
        return _outcome(model, example, first, ProbePlacement("meta", f"--probe-device meta; it failed there: {why}"),
                        hint=_META_ONLY_HINT)
    need, budget, over = over_budget(model, options.budget)
    if over or options.build_cpu is None:
        return _on_placeholder(model, pristine, example, first, why, (need, budget, over), options, guard)
    cpu_model, cpu_example = options.build_cpu()
    second = _probe(cpu_model, cpu_example, guard, f"probing {options.name}'s forward on the CPU")
    return _outcome(cpu_model, cpu_example, second, ProbePlacement("cpu", f"meta failed: {why}"))


def _outcome(model: nn.Module, example: Any, inspection: Inspection, placement: ProbePlacement, hint: str | None = None,
             sizes_from: nn.Module | None = None, timed_out: bool = False) -> PlanOutcome:
    """The plan's outcome from the inspection that counts; ``hint``: where the probe stayed on the meta device,
    how to probe elsewhere (appended to its N004 notes as new findings)."""
    findings = inspection.findings if hint is None else tuple(with_meta_hint(list(inspection.findings), hint))
    return PlanOutcome(model, example, findings, inspection.status, placement, inspection.index, sizes_from, timed_out)


def _probe(model: nn.Module, example: Any, guard: Guard, label: str, device: str | None = None,
           limit: int | None = None) -> Inspection:
    from ssdaudit.registration.placeholder import address_space_limit

    with guard(label), (address_space_limit(limit) if limit is not None else contextlib.nullcontext()):
        return inspect_unregistered(model, example, device)


def _pristine(model: nn.Module) -> nn.Module | None:
    """A deep copy of the meta model before its probe (a forward that fails half-way can leave it half-changed),
    or None for a model that refuses one (the placeholder copy is then made from the probed model)."""
    try:
        return copy.deepcopy(model)
    except Exception:
        return None


def _on_cpu_by_request(model: nn.Module, options: ProbeOptions, guard: Guard) -> PlanOutcome:
    """``probe_device="cpu"``: a CPU build with random weights, refused over the budget."""
    if options.build_cpu is None:
        raise UsageError("probe_device='cpu' needs a CPU build of the model: name it as a target "
                         "(ssdaudit params TARGET --probe-device cpu), or probe on meta (probe_device='auto')")
    need, budget, over = over_budget(model, options.budget)
    if over:
        raise UsageError(f"--probe-device cpu: {options.name} needs {human_bytes(need)} on the CPU, over the budget of "
                         f"{human_bytes(budget)}: raise --probe-memory, or probe on meta (--probe-device meta)")
    cpu_model, cpu_example = options.build_cpu()
    found = _probe(cpu_model, cpu_example, guard, f"probing {options.name}'s forward")
    placement = (ProbePlacement("none", "no example input") if cpu_example is None
                 else ProbePlacement("cpu", "--probe-device cpu: random weights"))
    return _outcome(cpu_model, cpu_example, found, placement)


def _on_placeholder(model: nn.Module, pristine: nn.Module | None, example: Any, first: Inspection, why: str,
                    sizes: tuple[int, int, bool], options: ProbeOptions, guard: Guard) -> PlanOutcome:
    """The probe on a CPU copy with placeholder weights (its allocations within the budget); the meta run stands
    when the copy cannot be made or its probe runs past the time limit."""
    from ssdaudit.registration.placeholder import placeholder_copy, placeholder_input

    need, budget, over = sizes
    try:
        copied, copied_example = placeholder_copy(pristine or model, budget), placeholder_input(example)
    except UserError:
        raise
    except Exception as exc:  # a model that refuses the copy: the meta run is all there is
        return _outcome(model, example, first,
                        ProbePlacement("meta", f"meta failed: {why}; no CPU copy with placeholder weights "
                                       f"could be made ({exc.__class__.__name__})"))
    try:
        second = _probe(copied, copied_example, guard,
                        f"probing {options.name}'s forward on a CPU copy with placeholder weights", "placeholder", budget)
    except TimeLimitExceeded:  # a CPU forward of a very large model: the meta run stands
        return _outcome(model, example, first,
                        ProbePlacement("meta", f"meta failed: {why}; the probe on a CPU copy with placeholder "
                                       "weights ran past --timeout (raise it: it takes as long as a CPU forward)"),
                        hint=_TIMEOUT_HINT, timed_out=True)
    if second.status.failure is not None:  # it failed on the CPU too: the meta device is not the (only) problem
        reason = (f"meta failed: {why}; on a CPU copy with placeholder weights it failed too: "
                  f"{meta_reason(second.status.failure)}")
    elif over:
        reason = (f"meta failed: {why}; placeholder weights: a CPU copy with random weights would need "
                  f"{human_bytes(need)}, over the {human_bytes(budget)} budget (--probe-memory)")
    else:
        reason = f"meta failed: {why}; placeholder weights (no CPU build of the model at hand)"
    return _outcome(copied, copied_example, second, ProbePlacement("cpu", reason), sizes_from=model)

