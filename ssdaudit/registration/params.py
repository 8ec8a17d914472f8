"""Counting parameters (tied weights once), grouping, comparing with a reference, predicting checkpoint bytes."""

from __future__ import annotations

import collections
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ssdaudit.core.paths import group_by_prefix
from ssdaudit.checkpoints.formats import is_buffer_name
from ssdaudit.core.report import failing_findings
from ssdaudit.core.findings import rules_tagged
from ssdaudit.core.findings import Finding, Severity
from ssdaudit.registration.evidence import ParamsEvidence, ProbeStatus, RoundTrip, RoundTripStatus
from ssdaudit.registration.plan import PlanOutcome, ProbeOptions, probe_plan
from ssdaudit.registration.probe_device import ProbePlacement
from ssdaudit.registration.roundtrip import run_roundtrip
from ssdaudit.registration.rules import Phase, judge


@dataclass
class Group:
    path: str
    params: int


@dataclass
class ReferenceComparison:
    name: str
    params: int
    groups: list[dict[str, Any]]  # {"path", "params" (reference), "target" (registered), "difference"}
    difference: int  # reference params - target registered params
    explanation: list[str]


@dataclass
class CheckpointComparison:
    path: str
    file_bytes: int
    predicted_bytes: int
    missing_keys: list[str]
    unexpected_keys: list[str]
    shape_mismatch: list[str]


@dataclass
class ParamsReport:
    target: str
    registered_params: int
    trainable_params: int
    unregistered_params: int
    effective_params: int
    checkpoint_bytes: int
    checkpoint_bytes_if_fixed: int
    bytes_exact: bool
    groups: list[Group]
    findings: list[Finding]
    reference: ReferenceComparison | None = None
    checkpoint: CheckpointComparison | None = None
    layers: list[Any] | None = None  # layers.LayerRow, with --layers
    probe: ProbePlacement | None = None  # where the forward probe ran and why, for the report
    # evidence (not in the JSON): the probe's outcome (where, which modes ran, why one failed), and the round trip's
    probe_status: ProbeStatus | None = None
    roundtrip: RoundTripStatus | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    def exit_code(self, strict: bool = False) -> int:
        """1 on an error finding (warnings too when ``strict``) or a checkpoint that lacks or mis-shapes tensors."""
        broken = self.checkpoint is not None and bool(self.checkpoint.missing_keys or self.checkpoint.shape_mismatch)
        return 1 if failing_findings(self.findings, strict) or broken else 0

    def to_dict(self) -> dict[str, Any]:
        ref = None
        if self.reference is not None:
            r = self.reference
            ref = {"name": r.name, "params": r.params, "groups": r.groups, "difference": r.difference, "explanation": r.explanation}
        ckpt = None
        if self.checkpoint is not None:
            c = self.checkpoint
            ckpt = {
                "path": c.path,
                "file_bytes": c.file_bytes,
                "predicted_bytes": c.predicted_bytes,
                "missing_keys": c.missing_keys,
                "unexpected_keys": c.unexpected_keys,
                "shape_mismatch": c.shape_mismatch,
            }
        return {
            "target": self.target,
            "registered_params": self.registered_params,
            "trainable_params": self.trainable_params,
            "unregistered_params": self.unregistered_params,
            "effective_params": self.effective_params,
            "checkpoint_bytes": self.checkpoint_bytes,
            "checkpoint_bytes_if_fixed": self.checkpoint_bytes_if_fixed,
            "checkpoint_bytes_exact": self.bytes_exact,
            "groups": [{"path": g.path, "params": g.params} for g in self.groups],
            "reference": ref,
            "checkpoint": ckpt,
            "findings": [f.to_dict() for f in self.findings],
            **({"layers": [row.to_dict() for row in self.layers]} if self.layers is not None else {}),
            **({"probe": self.probe.to_dict()} if self.probe is not None else {}),
        }


class _SizeCounter(io.RawIOBase):
    """A seekable sink that only tracks how far a writer got."""

    def __init__(self) -> None:
        self.pos = self.end = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self.pos += n
        self.end = max(self.end, self.pos)
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.end + offset
        return self.pos

    def tell(self) -> int:
        return self.pos


def predict_checkpoint_bytes(state: Mapping[str, torch.Tensor]) -> tuple[int, bool]:
    """Bytes ``torch.save(state)`` writes, without writing or copying tensor data.

    Returns (bytes, exact). CPU/CUDA tensors: exact (torch's own writer with ``skip_data``).
    Meta tensors: estimated from CPU fake tensors of the same layout (within about 0.1%).
    """
    from torch.serialization import skip_data

    # Keep the OrderedDict and its `_metadata` (module versions): torch.save pickles them too.
    state = state if isinstance(state, dict) else dict(state)
    sink = _SizeCounter()
    if not any(isinstance(t, torch.Tensor) and t.is_meta for t in state.values()):  # extra state may be any object
        with skip_data():
            torch.save(state, sink)  # type: ignore[arg-type]  # any seekable binary sink works
        return sink.end, True
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fakes: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
        by_storage: dict[tuple[int, torch.dtype], torch.Tensor] = {}
        if hasattr(state, "_metadata"):
            fakes._metadata = state._metadata  # type: ignore[attr-defined]  # torch.save pickles it with the dict
        for key, t in state.items():
            if not isinstance(t, torch.Tensor):  # get_extra_state()'s object: pickled as it is
                fakes[key] = t
                continue
            storage_key = (t.untyped_storage()._cdata, t.dtype)
            if storage_key not in by_storage:
                n = t.untyped_storage().nbytes() // max(t.element_size(), 1)
                by_storage[storage_key] = torch.empty(n, dtype=t.dtype, device="cpu")
            fakes[key] = by_storage[storage_key].as_strided(t.shape, t.stride(), t.storage_offset())
        with skip_data(materialize_fake_tensors=True):
            torch.save(fakes, sink)  # type: ignore[arg-type]
    return sink.end, False


def count_params(model: nn.Module) -> tuple[int, int]:
    """(registered, trainable) parameters, each tied parameter counted once."""
    params = list(model.parameters())  # parameters() already yields a shared tensor once
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def group_params(model: nn.Module, depth: int = 1) -> list[Group]:
    """Registered parameters per module path at ``depth`` (1: the model's children); each tensor once."""
    unique = dict(model.named_parameters())  # named_parameters() yields each tensor once
    groups = group_by_prefix(unique.items(), lambda kv: kv[0], depth)
    return [Group(k, sum(p.numel() for _, p in members)) for k, members in groups.items()]


def state_dict_params(state: Mapping[str, torch.Tensor]) -> int:
    """Parameters in a checkpoint: every tensor except BatchNorm running statistics."""
    return sum(t.numel() for k, t in state.items() if not is_buffer_name(k))


def group_state_dict(state: Mapping[str, torch.Tensor], depth: int = 1) -> list[Group]:
    params = [(k, t) for k, t in state.items() if not is_buffer_name(k)]
    groups = group_by_prefix(params, lambda kv: kv[0], depth)
    return [Group(k, sum(t.numel() for _, t in members)) for k, members in groups.items()]


def _fixed_state(model: nn.Module, findings: list[Finding], on_meta: bool = False) -> dict[str, torch.Tensor]:
    """The state_dict the model would have with every finding fixed (members registered under their names).
    ``on_meta``: the members are taken as meta tensors of their full size (they come from a placeholder copy,
    whose tensors share memory)."""
    state = model.state_dict()

    def sized(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to("meta") if on_meta else t.detach()

    for f in findings:
        for name, obj in f.members.items():
            if isinstance(obj, nn.Module):
                state.update({f"{name}.{k}": sized(v) for k, v in obj.state_dict().items()})
            elif isinstance(obj, torch.Tensor):
                state[name] = sized(obj)
    return state


def compare_with_reference(
    name: str, ref_groups: list[Group], ref_total: int, report_groups: list[Group], registered: int, findings: list[Finding]
) -> ReferenceComparison:
    """Align target and reference groups by path and explain each difference by the findings at that path."""
    target = {g.path: g.params for g in report_groups}
    reference = {g.path: g.params for g in ref_groups}
    rows, explanation = [], []
    by_path: dict[str, list[Finding]] = {}
    for f in findings:
        if f.params:
            by_path.setdefault(f.path.split(".")[0] if f.path != "<forward>" else f.path, []).append(f)
    for path in list(reference) + [p for p in target if p not in reference]:
        r, t = reference.get(path, 0), target.get(path, 0)
        rows.append({"path": path, "params": r, "target": t, "difference": r - t})
        if r == t:
            continue
        hidden = by_path.get(path, [])
        if r > t and hidden:
            covered = sum(f.params for f in hidden)
            kinds = ", ".join(f"the unregistered {f.name} `{f.path}` ({f.rule})" for f in hidden)
            exact = "" if covered == r - t else f" (they hold {covered:,})"
            explanation.append(f"{r - t:,} missing = {kinds}{exact}")
        elif r > t:
            explanation.append(f"{r - t:,} fewer in `{path}` than the reference: a different architecture there")
        else:
            explanation.append(f"{t - r:,} more in `{path}` than the reference")
    difference = ref_total - registered
    if difference == 0 and not explanation:
        explanation.append("registered parameters match the reference exactly")
    return ReferenceComparison(name, ref_total, rows, difference, explanation)


def audit_params(
    model: nn.Module,
    reference: nn.Module | Mapping[str, torch.Tensor] | None = None,
    example_input: Any = None,
    depth: int = 1,
    target: str = "<model>",
    reference_name: str = "<reference>",
    rebuild: Callable[[], nn.Module] | None = None,
    sizes_from: nn.Module | None = None,
    probe_device: str = "auto",
    probe_memory: int | None = None,
    evidence: PlanOutcome | None = None,
) -> ParamsReport:
    """Count what the model registers and what it hides, and compare with ``reference``.

    ``example_input``: the probe input (a tuple is unpacked into ``forward``'s arguments; ``None`` skips the probe).
    ``depth``: module depth of the parameter groups. ``rebuild``: a factory of the same model; with an example
    input, the save-reload round trip (R007) runs. ``reference``: a model, or a state_dict (its parameters counted
    without BN running statistics). All counts in the report are element counts (parameters); ``checkpoint_bytes``
    and ``checkpoint_bytes_if_fixed`` are bytes, computed by torch's own writer without writing a file.
    ``sizes_from``: the model whose state_dict gives those bytes when ``model`` is a placeholder copy of it
    (``placeholder.placeholder_copy``: its weights share memory, so its own state_dict would undercount).
    ``probe_device``, ``probe_memory``: the probe plan's (``plan.probe_plan``, as ``find_unregistered``: a meta
    model's probe may rerun on placeholder weights, within ``probe_memory`` bytes). ``evidence``: the outcome of a
    plan already run (``audit_target`` runs it with the target's CPU build): ``model`` and ``example_input`` must be
    the ones it probed, and ``sizes_from`` is then its own.

    Side effects: the forward probe runs the model in train and eval mode (the mode is restored, and
    ``nn.Module.__init__`` is observed while it runs; see ``find_unregistered``); the round trip builds the model
    twice more and runs it with the global RNG saved and restored. Raises nothing for a forward that fails (an N004
    note says so), nor for a round trip that cannot run or cannot compare a module (an N004 note says what was not
    compared and why): the round trip itself raises only ``UserError`` (the time limit).
    """
    if evidence is None:
        evidence = probe_plan(model, example_input, ProbeOptions(probe_device, probe_memory))
        model, example_input = evidence.model, evidence.example
    sizes_from = evidence.sizes_from if evidence.sizes_from is not None else sizes_from
    trip, roundtrip = _roundtrip(model, example_input, rebuild)
    findings = list(evidence.findings)
    findings += judge(Phase.AUDIT, ParamsEvidence(evidence.index, evidence.status, roundtrip=roundtrip), findings)
    report = _counted(model, findings, target, depth, sizes_from)
    report.probe, report.probe_status, report.roundtrip = evidence.placement, evidence.status, trip
    if reference is not None:
        if isinstance(reference, nn.Module):
            ref_groups, ref_total = group_params(reference, depth), count_params(reference)[0]
        else:
            ref_groups, ref_total = group_state_dict(reference, depth), state_dict_params(reference)
        report.reference = compare_with_reference(reference_name, ref_groups, ref_total, report.groups,
                                                  report.registered_params, findings)
    return report


def _counted(model: nn.Module, findings: list[Finding], target: str, depth: int,
             sizes_from: nn.Module | None) -> ParamsReport:
    """The report's counts: registered, trainable and hidden parameters (elements), the parameter groups, and the
    checkpoint's bytes as it is and with every finding fixed (``sizes_from``'s state_dict when given)."""
    registered, trainable = count_params(model)
    unregistered = sum(f.params for f in findings if f.rule in rules_tagged("hides-parameters"))
    sized = sizes_from if sizes_from is not None else model
    ckpt_bytes, exact = predict_checkpoint_bytes(sized.state_dict())
    fixed_bytes, exact_fixed = predict_checkpoint_bytes(_fixed_state(sized, findings, on_meta=sizes_from is not None))
    return ParamsReport(
        target=target,
        registered_params=registered,
        trainable_params=trainable,
        unregistered_params=unregistered,
        effective_params=registered + unregistered,
        checkpoint_bytes=ckpt_bytes,
        checkpoint_bytes_if_fixed=fixed_bytes,
        bytes_exact=exact and exact_fixed,
        groups=group_params(model, depth),
        findings=findings,
    )


def _roundtrip(model: nn.Module, example_input: Any,
               rebuild: Callable[[], nn.Module] | None) -> tuple[RoundTripStatus, RoundTrip | None]:
    """The save-reload round trip where it can run (an example input, a factory, a model off the meta device):
    its status (ran, compared, equal, why not) and its evidence for R007 (None where it did not run)."""
    if example_input is None:
        return RoundTripStatus.not_run("no example input"), None
    if rebuild is None:
        return RoundTripStatus.not_run("no factory to rebuild the model"), None
    if any(t.is_meta for t in model.parameters()):
        return RoundTripStatus.not_run("the model is on the meta device"), None
    trip = run_roundtrip(rebuild, example_input)
    return trip.status, trip


def compare_with_checkpoint(model: nn.Module, state: Mapping[str, torch.Tensor], path: str, file_bytes: int) -> CheckpointComparison:
    """What the checkpoint file lacks, has extra, or shapes differently, against the model's state_dict."""
    own = model.state_dict()
    predicted, _ = predict_checkpoint_bytes(own)
    missing, unexpected, mismatch = compare_keys(own, state)
    return CheckpointComparison(path, file_bytes, predicted, missing, unexpected, mismatch)


def compare_keys(own: Mapping[str, Any], other: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(keys ``other`` lacks, keys only ``other`` has, keys whose shapes differ) against ``own``'s state_dict."""
    missing = [k for k in own if k not in other]
    unexpected = [k for k in other if k not in own]
    mismatch = [k for k in own if k in other and tuple(own[k].shape) != tuple(other[k].shape)]
    return missing, unexpected, mismatch
