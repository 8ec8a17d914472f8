"""One pipeline per capability, shared by the CLI, ``ssdaudit check`` and the pytest plugin.

``audit_target(spec, ...)`` reads top to bottom: load (the target, the reference and checkpoint beside it) ->
plan (``plan.probe_plan``: where the forward probe runs, the meta-device fallback) -> evidence and rules (the
plan's inspection) -> counts and the round trip (``params.audit_params``) -> merge (the static evidence of the
model's source, ``source_lint.merged_findings``) -> report (``ParamsReport``, the layer table, the checkpoint). Target code runs under
``errors.running_user_code`` (its prints go to stderr, ``sys.exit`` is a load error, ``timeout`` bounds it).
Relative specs are read from ``root`` (a configuration's folder) without changing the working directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssdaudit.core.errors import DEFAULT_TIMEOUT_S, Deadline
from ssdaudit.registration.params import ParamsReport

if TYPE_CHECKING:
    from ssdaudit.core.targets import LoadedTarget, TargetSpec
    from ssdaudit.registration.plan import PlanOutcome

MAX_INPUT_ELEMENTS = 2**30  # 4 GiB of float32: an input shape beyond this is a typo, not a probe


def check_input_shape(shape: tuple[int, ...], what: str = "--input-shape") -> tuple[int, ...]:
    """``shape`` if it is a sane probe input, else ``UsageError`` naming ``what``."""
    from ssdaudit.core.errors import UsageError

    if not shape or any(d <= 0 for d in shape):
        raise UsageError(f"bad {what} {shape}: give positive integers like 1,3,300,300")
    numel = 1
    for d in shape:
        numel *= d
    if numel > MAX_INPUT_ELEMENTS:
        raise UsageError(f"{what} {','.join(map(str, shape))} asks for {numel:,} values ({numel * 4 / 2**30:.0f} GiB): "
                         "give a small probe input such as 2,3,300,300")
    return shape


def audit_target(target: str, reference: str | None = None, checkpoint: Path | None = None,
                 input_shape: tuple[int, ...] | None = None, device: str = "cpu", depth: int = 1, timeout: float = DEFAULT_TIMEOUT_S,
                 roundtrip: bool = True, root: Path | None = None, layers: bool = False, probe_device: str = "auto",
                 probe_memory: int | None = None, lint_source: bool = True) -> ParamsReport:
    """Load the target (and reference, checkpoint) and audit it; target code runs under the time limit.

    ``input_shape``: the probe input's shape (it wins over the file's ``example_input()``); ``timeout``: seconds for
    building and probing (0: no limit); ``root``: the folder relative specs are read from; ``layers``: add the
    torchinfo layer table with the unregistered members spliced in (``layers.layer_table``). ``probe_device``: where
    the forward probe of a model built on the meta device runs ("auto": on meta, and when that fails, on a CPU copy
    with random weights if its parameters and buffers fit ``probe_memory`` bytes (None: half the memory available);
    "meta": there only; "cpu": always on a CPU copy); ``report.probe`` says which and why. The save-reload round trip
    runs only on a model built on the CPU. ``lint_source``: also lint the source of the model's own classes and
    merge those findings by attribute path (``source_lint.source_findings``). ``target`` and
    ``reference``: "file.py[:NAME]", "package.module:NAME", "torchvision:NAME" (timm:, hf:), a checkpoint, or for the
    reference a built-in name ("ssds-voc"); ``input_shape`` in elements per dimension.

    Side effects: imports and runs the target's code (prints go to stderr), then as ``audit_params``. Raises
    ``LoadError`` (a target, reference or checkpoint that cannot be loaded, or whose code calls ``sys.exit``),
    ``TimeLimitExceeded`` (past ``timeout``), ``UsageError`` (an input shape too large to be a probe, a bad
    ``probe_device``, or ``probe_device="cpu"`` for a model over the ``probe_memory`` budget)."""
    from ssdaudit.registration.probe_device import check_probe_device

    check_probe_device(probe_device, device)
    shape = check_input_shape(tuple(input_shape)) if input_shape else None
    deadline = Deadline(timeout or None)
    loaded = _load(target, reference, checkpoint, device, root, deadline)
    if loaded.target.model is None:  # a checkpoint target: counts from its tensors
        return _checkpoint_report(target, loaded, depth)
    outcome = _plan(target, loaded, shape, device, probe_device, probe_memory, root, deadline)
    if outcome.timed_out:
        deadline = Deadline(None)  # what follows (the layer table) is not the probe's to bound
    report = _counts(target, loaded, outcome, depth, roundtrip and device != "meta", deadline)
    model, example = outcome.model, outcome.example
    if lint_source:
        from ssdaudit.registration.source_lint import merged_findings

        report.findings = merged_findings(model, report.findings, outcome.status.ran)
    if layers and example is not None:
        from ssdaudit.core.errors import running_user_code
        from ssdaudit.registration.layers import layer_table

        with running_user_code(f"the layer table of {target}", deadline):
            report.layers = layer_table(model, example, depth, report.findings)
    if loaded.checkpoint_state is not None and checkpoint is not None:
        from ssdaudit.registration.params import compare_with_checkpoint

        report.checkpoint = compare_with_checkpoint(model, loaded.checkpoint_state, str(checkpoint), loaded.checkpoint_bytes)
    return report


@dataclass(frozen=True)
class _Loaded:
    """What ``audit_target`` loaded: the target (resolved spec and built model or checkpoint), the reference (an
    object and its name), the checkpoint's tensors (shapes) and bytes."""

    spec: "TargetSpec"
    target: "LoadedTarget"
    reference: Any
    reference_name: str
    checkpoint_state: Any
    checkpoint_bytes: int


def _load(target: str, reference: str | None, checkpoint: Path | None, device: str, root: Path | None,
          deadline: Deadline) -> _Loaded:
    """Build the target and the reference (their code runs under the time limit), read the checkpoint's shapes."""
    from ssdaudit.checkpoints.formats import load_checkpoint_shapes
    from ssdaudit.core.errors import running_user_code
    from ssdaudit.core.targets import TargetSpec, importable_from
    from ssdaudit.registration.loading import load_model_or_checkpoint
    from ssdaudit.registration.references import BUILTIN_REFERENCES, load_reference

    spec = TargetSpec.parse(target).resolved(root)
    if reference and reference not in BUILTIN_REFERENCES:
        reference = TargetSpec.parse(reference).resolved(root).text
    with importable_from(root), running_user_code(f"building {target}", deadline):
        loaded = load_model_or_checkpoint(spec, device=device)
    with importable_from(root), running_user_code(f"building the reference {reference}", deadline):
        ref_obj, ref_name = load_reference(reference, device) if reference else (None, None)
    ckpt_state, ckpt_bytes = load_checkpoint_shapes(checkpoint) if checkpoint is not None else (None, 0)
    return _Loaded(spec, loaded, ref_obj, ref_name or str(reference or ""), ckpt_state, ckpt_bytes)


def _checkpoint_report(target: str, loaded: _Loaded, depth: int) -> ParamsReport:
    """The report of a checkpoint target: counts from its tensors (the real file's bytes: no prediction needed)."""
    from ssdaudit.registration.params import (compare_with_reference, count_params, group_params, group_state_dict,
                                              state_dict_params)

    state = loaded.target.state_dict or {}
    total = state_dict_params(state)
    size = loaded.target.checkpoint_bytes
    groups = group_state_dict(state, depth)
    report = ParamsReport(target, total, total, 0, total, size, size, True, groups, [])
    ref_obj = loaded.reference
    if ref_obj is not None:
        if isinstance(ref_obj, dict):
            rg, rt = group_state_dict(ref_obj, depth), state_dict_params(ref_obj)
        else:
            rg, rt = group_params(ref_obj, depth), count_params(ref_obj)[0]
        report.reference = compare_with_reference(loaded.reference_name, rg, rt, groups, total, [])
    return report


def _plan(target: str, loaded: _Loaded, shape: tuple[int, ...] | None, device: str, probe_device: str,
          probe_memory: int | None, root: Path | None, deadline: Deadline) -> "PlanOutcome":
    """The probe plan (``plan.probe_plan``) with the target's CPU build for the fallback; each run of the target's
    code under the time limit."""
    from ssdaudit.core.errors import running_user_code
    from ssdaudit.core.targets import importable_from
    from ssdaudit.registration.loading import load_model_or_checkpoint, probe_input
    from ssdaudit.registration.plan import ProbeOptions, probe_plan

    def build_cpu() -> tuple[Any, Any]:
        with importable_from(root), running_user_code(f"building {target} on the CPU for the probe", deadline):
            cpu = load_model_or_checkpoint(loaded.spec, device="cpu")
        return cpu.model, probe_input(shape, cpu.example_input, "cpu")

    options = ProbeOptions(probe_device if device == "meta" else "auto", probe_memory, build_cpu,
                           lambda label: running_user_code(label, deadline), target, device)
    return probe_plan(loaded.target.model, probe_input(shape, loaded.target.example_input, device), options)


def _counts(target: str, loaded: _Loaded, outcome: "PlanOutcome", depth: int, roundtrip: bool,
            deadline: Deadline) -> ParamsReport:
    """``audit_params`` on the plan's evidence: counts, notes, the reference, the round trip (a CPU-built model)."""
    from ssdaudit.core.errors import running_user_code
    from ssdaudit.registration.params import audit_params

    with running_user_code(f"probing {target}'s forward", deadline):
        return audit_params(outcome.model, loaded.reference, outcome.example, depth, target=target,
                            reference_name=loaded.reference_name,
                            rebuild=loaded.target.rebuild if roundtrip else None, evidence=outcome)
