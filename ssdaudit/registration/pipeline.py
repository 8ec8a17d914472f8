"""One pipeline per capability, shared by the CLI, ``ssdaudit check`` and the pytest plugin.

``audit_target(spec, ...)``: load what ``spec`` names (a model file, ``package.module:NAME`` or a checkpoint), the
reference and checkpoint beside it, run the audit, and return a ``ParamsReport``. Target code runs under
``errors.running_user_code`` (its prints go to stderr, ``sys.exit`` is a load error, ``timeout`` bounds it).
Relative specs are read from ``root`` (a configuration's folder) without changing the working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssdaudit.core.errors import DEFAULT_TIMEOUT_S
from ssdaudit.registration.params import ParamsReport

if TYPE_CHECKING:
    from ssdaudit.core.targets import LoadedTarget

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
    from ssdaudit.core.errors import Deadline, running_user_code
    from ssdaudit.checkpoints.formats import load_checkpoint_shapes
    from ssdaudit.core.targets import TargetSpec, importable_from
    from ssdaudit.registration.loading import load_model_or_checkpoint
    from ssdaudit.registration.params import ParamsReport, compare_with_checkpoint, compare_with_reference, group_state_dict, state_dict_params
    from ssdaudit.registration.references import BUILTIN_REFERENCES, load_reference

    from ssdaudit.registration.probe_device import check_probe_device

    check_probe_device(probe_device, device)
    shape = check_input_shape(tuple(input_shape)) if input_shape else None
    deadline = Deadline(timeout or None)
    shown = target
    spec = TargetSpec.parse(target).resolved(root)
    if reference and reference not in BUILTIN_REFERENCES:
        reference = TargetSpec.parse(reference).resolved(root).text
    with importable_from(root), running_user_code(f"building {shown}", deadline):
        loaded = load_model_or_checkpoint(spec, device=device)
    with importable_from(root), running_user_code(f"building the reference {reference}", deadline):
        ref_obj, ref_name = load_reference(reference, device) if reference else (None, None)
    ckpt_state, ckpt_bytes = load_checkpoint_shapes(checkpoint) if checkpoint is not None else (None, 0)
    if loaded.model is None:  # a checkpoint target: counts from its tensors
        state = loaded.state_dict or {}
        total = state_dict_params(state)
        size = loaded.checkpoint_bytes  # the real file(s): no prediction needed
        groups = group_state_dict(state, depth)
        report = ParamsReport(shown, total, total, 0, total, size, size, True, groups, [])
        if ref_obj is not None:
            from ssdaudit.registration.params import count_params, group_params

            if isinstance(ref_obj, dict):
                rg, rt = group_state_dict(ref_obj, depth), state_dict_params(ref_obj)
            else:
                rg, rt = group_params(ref_obj, depth), count_params(ref_obj)[0]
            report.reference = compare_with_reference(ref_name or str(reference), rg, rt, groups, total, [])
        return report
    from ssdaudit.registration.params import audit_params
    from ssdaudit.registration.probe_device import BUILT_THERE, ProbePlacement, human_bytes, meta_reason, over_budget
    from ssdaudit.registration.unregistered import probe_failure

    from ssdaudit.registration.loading import probe_input

    def example_of(built: LoadedTarget, model_device: str) -> Any:
        return probe_input(shape, built.example_input, model_device)

    def on_cpu() -> LoadedTarget:
        with importable_from(root), running_user_code(f"building {shown} on the CPU for the probe", deadline):
            return load_model_or_checkpoint(spec, device="cpu")

    on_meta = device == "meta"
    cpu = loaded
    placement = ProbePlacement(device if on_meta else "cpu", BUILT_THERE)
    if on_meta and probe_device == "cpu":
        need, budget, over = over_budget(loaded.model, probe_memory)
        if over:
            from ssdaudit.core.errors import UsageError

            raise UsageError(f"--probe-device cpu: {shown} needs {human_bytes(need)} on the CPU, over the budget of "
                             f"{human_bytes(budget)}: raise --probe-memory, or probe on meta (--probe-device meta)")
        cpu = on_cpu()
        placement = ProbePlacement("cpu", "--probe-device cpu: random weights")
    model = cpu.model
    example = example_of(cpu, "cpu" if cpu is not loaded else device)
    pristine = None  # the meta model before its probe (a forward that fails half-way can leave it half-changed)
    if on_meta and cpu is loaded and probe_device == "auto":
        import copy

        try:
            pristine = copy.deepcopy(loaded.model)
        except Exception:  # refuses a deep copy: the placeholder copy (if needed) is made from the probed model
            pristine = None
    with running_user_code(f"probing {shown}'s forward", deadline):
        report = audit_params(model, ref_obj, example, depth, target=shown, reference_name=ref_name or "",
                              rebuild=loaded.rebuild if roundtrip and not on_meta else None,
                              probe_device="meta")  # the fallback is decided below, by --probe-memory
    failure = probe_failure(report.findings) if on_meta and cpu is loaded and example is not None else None
    if failure is not None and probe_device == "auto":
        why = meta_reason(failure)
        need, budget, over = over_budget(loaded.model, probe_memory)
        if over:
            # too large for a CPU copy with random weights: a CPU copy whose weights share a few small blocks
            # (the probe asks which tensors forward reads, not what it computes); its allocations stay in budget
            from ssdaudit.registration.placeholder import address_space_limit, placeholder_copy, placeholder_input

            from ssdaudit.core.errors import TimeLimitExceeded

            meta_report, meta_model, meta_example = report, model, example
            model, example = placeholder_copy(pristine or loaded.model, budget), placeholder_input(example)
            try:
                with running_user_code(f"probing {shown}'s forward on a CPU copy with placeholder weights",
                                       deadline), address_space_limit(budget):
                    report = audit_params(model, ref_obj, example, depth, target=shown,
                                          reference_name=ref_name or "", sizes_from=loaded.model)
            except TimeLimitExceeded:  # a CPU forward of a very large model: the meta run's report stands
                report, model, example = meta_report, meta_model, meta_example
                placement = ProbePlacement("meta", f"meta failed: {why}; the probe on a CPU copy with placeholder "
                                           "weights ran past --timeout (raise it: it takes as long as a CPU forward)")
                deadline = Deadline(None)  # what follows (the layer table) is not the probe's to bound
            else:
                placement = ProbePlacement("cpu", f"meta failed: {why}; placeholder weights: a CPU copy with random "
                                           f"weights would need {human_bytes(need)}, over the {human_bytes(budget)} "
                                           "budget (--probe-memory)")
                failure = probe_failure(report.findings)
                if failure is not None:  # it failed on the CPU too: the meta device is not the (only) problem
                    placement = ProbePlacement("cpu", f"meta failed: {why}; on a CPU copy with placeholder weights "
                                               f"it failed too: {meta_reason(failure)}")
        else:
            cpu = on_cpu()
            model, example = cpu.model, example_of(cpu, "cpu")
            with running_user_code(f"probing {shown}'s forward on the CPU", deadline):
                report = audit_params(model, ref_obj, example, depth, target=shown, reference_name=ref_name or "")
            placement = ProbePlacement("cpu", f"meta failed: {why}")
    elif failure is not None:
        placement = ProbePlacement("meta", f"--probe-device meta; it failed there: {meta_reason(failure)}")
    if placement.device == "meta" and failure is not None:
        # the input is not the problem there: the meta device is; say so where N004's generic fix would mislead
        hint = ("raise --timeout to let the probe finish on a CPU copy with placeholder weights" if probe_device == "auto"
                else "--probe-device auto or cpu runs it on a CPU copy with random weights")
        for f in report.findings:
            if f.rule == "N004":
                f.message += f" (on the meta device: {hint})"
    if example is None:
        placement = ProbePlacement("none", "no example input")
    report.probe = placement
    if lint_source:
        from ssdaudit.registration.source_lint import source_findings
        from ssdaudit.registration.unregistered import probe_ran

        report.findings += source_findings(model, report.findings, probe_ran(report.findings))
    if layers and example is not None:
        from ssdaudit.registration.layers import layer_table

        with running_user_code(f"the layer table of {shown}", deadline):
            report.layers = layer_table(model, example, depth, report.findings)
    if ckpt_state is not None and checkpoint is not None:
        report.checkpoint = compare_with_checkpoint(model, ckpt_state, str(checkpoint), ckpt_bytes)
    return report
