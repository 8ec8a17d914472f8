"""Finding unregistered members: an attribute walk over the model plus a forward probe.

The walk starts at every registered module's ``__dict__`` and follows plain containers, plain objects,
closures and ``functools.partial`` to any depth, reporting modules and parameters that
``model.modules()`` / ``model.parameters()`` do not reach. The probe runs one forward pass with global
module hooks to catch modules that run but are not part of the model (built inside ``forward()``, or
hidden where no attribute reaches), and records which tensors the forward reads (for R004).
"""

from __future__ import annotations

import collections
import copy
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ssdaudit.core.forward_call import call_forward
from ssdaudit.core.errors import ProbeError, UserError, first_line
from ssdaudit.core.findings import RULES, Finding, Severity
from ssdaudit.core.frames import user_frame
from ssdaudit.registration.observe import ConstructionRecorder, StateGuard

if TYPE_CHECKING:
    from ssdaudit.registration.move_probe import MoveProbeResult
from ssdaudit.registration.walk import MOVE_FUNCTIONS, AttributeWalker, Hit

_MODE_DEPENDENT = (
    nn.modules.dropout._DropoutNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.RReLU,
)


@dataclass
class ProbeResult:
    """What one observed forward pass did. Ids are of objects kept alive here or by the model, so none is reused."""

    called: dict[int, nn.Module] = field(default_factory=dict)
    created_at: dict[int, str] = field(default_factory=dict)
    used_tensors: set[int] = field(default_factory=set)  # read by a torch function, or returned by forward
    first_use: dict[int, str] = field(default_factory=dict)  # id(tensor) -> name of the first function applied to it
    added: list[tuple[str, nn.Module]] = field(default_factory=list)  # (name, module) registered during forward()
    with_grad: set[int] = field(default_factory=set)  # modules called while autograd was recording
    created: list[nn.Module] = field(default_factory=list, repr=False)  # keeps created modules alive (stable ids)
    modes: list[str] = field(default_factory=list)  # "train", "eval": the modes that ran
    grad_observed: bool = False  # a pass ran with autograd enabled, so with_grad means something
    # floating tensors (not 0-dim) that existed before the passes and that forward read: id -> (tensor, the module
    # whose forward read it first); the device-move check (R008) asks which of them .to() would leave behind
    preexisting: dict[int, tuple[torch.Tensor, nn.Module]] = field(default_factory=dict, repr=False)
    # id(tensor) -> what the first move applied to it follows: "device" (.to(x.device), .cuda()), "dtype" (.to(x),
    # .type_as(x), .to(device=..., dtype=...)) or "fixed" (.float(), .half(): one dtype whatever the model's)
    move_kind: dict[int, str] = field(default_factory=dict)
    # Parameters (or fresh leaves with requires_grad) made during a pass: id -> (tensor, file:line), kept alive here
    made_params: dict[int, tuple[torch.Tensor, str | None, nn.Module]] = field(default_factory=dict, repr=False)
    param_reads: set[int] = field(default_factory=set)  # made_params read by a torch function after their creation

    def merge(self, other: "ProbeResult") -> None:
        for i, m in other.called.items():
            self.called.setdefault(i, m)
        for i, loc in other.created_at.items():
            self.created_at.setdefault(i, loc)
        self.used_tensors |= other.used_tensors
        for i, name in other.first_use.items():
            self.first_use.setdefault(i, name)
        self.added += other.added
        self.with_grad |= other.with_grad
        self.created += other.created
        self.modes += other.modes
        self.grad_observed = self.grad_observed or other.grad_observed
        for i, pair in other.preexisting.items():
            self.preexisting.setdefault(i, pair)
        for i, kind in other.move_kind.items():
            self.move_kind.setdefault(i, kind)
        for i, made in other.made_params.items():
            self.made_params.setdefault(i, made)
        self.param_reads |= other.param_reads


def probe_forward(
    model: nn.Module, example_input: Any, extra_modules: Sequence[nn.Module] = (), grad: bool = False,
    produced: dict[int, Any] | None = None,
) -> ProbeResult:
    """Run one forward pass under observation and leave the model exactly as it was.

    Records every module called (global hooks, and whether autograd was recording), where modules built during the
    pass were created, the tensors the pass reads (and the first function applied to each) or returns. BatchNorm
    statistics (also those of ``extra_modules``, the unregistered ones), RNG state and submodules registered during
    the pass are restored (``observe.StateGuard``). ``grad=False`` runs under ``torch.no_grad()``. Raises
    ``ProbeError`` if forward fails. Module construction is observed by patching ``nn.Module.__init__`` for the
    duration (``observe.ConstructionRecorder``): process-wide, under a lock, recording only this thread's modules,
    so a model built concurrently in another thread is neither recorded nor disturbed.
    ``produced`` (id -> weakref of every tensor made by a pass) is shared between passes, so a cache that one pass
    made is not taken for pre-existing state in the next.
    """
    import weakref

    result = ProbeResult(grad_observed=grad)
    made: dict[int, Any] = produced if produced is not None else {}
    inputs = {id(t) for t in tree_flatten(example_input)[0] if isinstance(t, torch.Tensor)}
    stack: list[nn.Module] = [model]

    def on_call(module: nn.Module, _args: Any) -> None:
        result.called.setdefault(id(module), module)
        stack.append(module)
        if torch.is_grad_enabled():
            result.with_grad.add(id(module))

    def on_return(_module: nn.Module, _args: Any, _output: Any) -> None:
        if len(stack) > 1:
            stack.pop()

    def on_module(module: nn.Module) -> None:
        result.created.append(module)
        where = _caller_location()
        if where is not None:
            result.created_at.setdefault(id(module), where)

    def on_parameter(parameter: nn.Parameter) -> None:
        result.made_params[id(parameter)] = (parameter, _caller_location(), stack[-1])
        made[id(parameter)] = weakref.ref(parameter)  # made by this pass: not state that existed before it

    def made_here(t: torch.Tensor) -> bool:
        ref = made.get(id(t))
        return ref is not None and ref() is t

    class _Reads(TorchFunctionMode):
        def __torch_function__(self, func: Any, types_: Any, args: Any = (), kwargs: Any = None) -> Any:
            name = getattr(func, "__name__", "")
            metadata = name == "__get__"  # .shape, .device, .dtype: a look at the tensor, not a use of its values
            flat = tree_flatten((args, kwargs or {}))[0]
            for k, leaf in enumerate(flat):
                if isinstance(leaf, torch.Tensor) and not metadata:
                    if id(leaf) in result.made_params and name != "requires_grad_":
                        result.param_reads.add(id(leaf))
                    result.used_tensors.add(id(leaf))
                    if id(leaf) not in result.first_use:
                        result.first_use[id(leaf)] = name
                        if k == 0 and name in MOVE_FUNCTIONS:
                            result.move_kind[id(leaf)] = _move_kind(name, flat[1:])
                    if (id(leaf) not in result.preexisting and leaf.is_floating_point() and leaf.dim() > 0
                            and id(leaf) not in inputs and not made_here(leaf)):
                        result.preexisting[id(leaf)] = (leaf, stack[-1])
            out = func(*args, **(kwargs or {}))
            if (isinstance(out, torch.Tensor) and out.requires_grad and out.grad_fn is None and not metadata
                    and id(out) not in result.made_params
                    and (name == "requires_grad_" or (kwargs or {}).get("requires_grad") is True)):
                # a fresh leaf that asks for gradients (torch.randn(..., requires_grad=True)): a parameter in all but name
                result.made_params[id(out)] = (out, _caller_location(), stack[-1])
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    try:
                        made[id(t)] = weakref.ref(t)
                    except TypeError:  # a tensor subclass without weak references: cannot be cached state anyway
                        pass
            return out

    handle = nn.modules.module.register_module_forward_pre_hook(on_call)
    handle_return = nn.modules.module.register_module_forward_hook(on_return)
    guard = StateGuard(model, extra_modules)
    try:
        with guard, ConstructionRecorder(on_module, on_parameter), torch.set_grad_enabled(grad), _Reads():
            output = call_forward(model, example_input)
            # Tensors handed back as they are (priors for the loss) miss .to() as much as those computed with.
            for leaf in tree_flatten(output)[0]:
                if isinstance(leaf, torch.Tensor):
                    result.used_tensors.add(id(leaf))
                    result.first_use.setdefault(id(leaf), "<returned>")
            del output
    except UserError:
        raise
    except Exception as exc:
        raise ProbeError(f"{exc.__class__.__name__}: {first_line(exc)}") from exc
    finally:
        handle.remove()
        handle_return.remove()
        result.added.extend(guard.added)
        for i in guard.added_parameters:  # registered by forward (lazy initialisation): the R010 question, not this one
            result.made_params.pop(i, None)
    return result



@dataclass
class ProbeOutcome:
    """The forward probe in both modes: the merged observations, and what failed (mode -> error)."""

    result: ProbeResult | None
    failures: dict[str, str]


def probe_modes(model: nn.Module, example_input: Any, extra_modules: Sequence[nn.Module] = ()) -> ProbeOutcome:
    """Probe forward in train mode (autograd recording, as in training) and in eval mode (under no_grad).

    Forward paths that run only in one mode (a tensor read only at inference) are seen either way. Every module's
    mode is restored afterwards. A mode whose pass fails is recorded in ``failures``; the other still counts.
    """
    modules = [*model.modules(), *(m for e in extra_modules for m in e.modules())]
    modes = [(m, m.training) for m in modules]
    merged: ProbeResult | None = None
    failures: dict[str, str] = {}
    produced: dict[int, Any] = {}
    try:
        for mode in ("train", "eval"):
            for m in modules:
                m.training = mode == "train"
            try:
                one = probe_forward(model, example_input, extra_modules, grad=mode == "train", produced=produced)
            except ProbeError as exc:
                failures[mode] = str(exc)
                continue
            one.modes.append(mode)
            if merged is None:
                merged = one
            else:
                merged.merge(one)
    finally:
        for m, training in modes:
            m.training = training
    return ProbeOutcome(merged, failures)


def _caller_location() -> str | None:
    """file:line of the user's frame (``ssdaudit.core.frames``: where a module was constructed)."""
    frame = user_frame(sys._getframe(1))
    return f"{_relative(frame.f_code.co_filename)}:{frame.f_lineno}" if frame is not None else None


def _relative(filename: str) -> str:
    """A path relative to the working directory when it lies below it (shorter, stable in reports)."""
    import os

    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel


def _assignment_location(owner: nn.Module, attr: str) -> str | None:
    """file:line where ``self.<attr>`` is assigned in the owner's class (or its bases), also through
    ``setattr(self, f"name{i}", value)``, whose f-string is matched against the attribute's name."""
    pattern = re.compile(rf"self\.{re.escape(attr)}\s*(=|:|\.append|\.extend|\[)")
    for cls in type(owner).__mro__:
        if cls.__module__.startswith("torch.") or cls is object:
            continue
        try:
            lines, start = inspect.getsourcelines(cls)
            filename = inspect.getsourcefile(cls)
        except (OSError, TypeError):
            continue
        if filename is None:
            continue
        for offset, text in enumerate(lines):
            if pattern.search(text):
                return f"{_relative(filename)}:{start + offset}"
        found = _setattr_line(lines, attr)
        if found is not None:
            return f"{_relative(filename)}:{start + found - 1}"
    return None


def _setattr_line(lines: list[str], attr: str) -> int | None:
    """1-based line (within ``lines``) of ``setattr(self, NAME, ...)`` whose NAME (a string or an f-string) can be
    ``attr``."""
    import ast
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr"
                and len(node.args) >= 2 and isinstance(node.args[0], ast.Name) and node.args[0].id == "self"):
            name = node.args[1]
            if isinstance(name, ast.Constant) and name.value == attr:
                return node.lineno
            if isinstance(name, ast.JoinedStr):
                regex = "".join(re.escape(str(v.value)) if isinstance(v, ast.Constant) else ".+" for v in name.values)
                if re.fullmatch(regex, attr):
                    return node.lineno
    return None


def _is_mode_dependent(module: nn.Module) -> bool:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.weight is not None:
            continue  # has parameters: already an error for the parameters it loses
        if isinstance(m, _MODE_DEPENDENT) and (not isinstance(m, nn.modules.instancenorm._InstanceNorm) or m.track_running_stats):
            return True
    return False


def _unregistered_params(objs: list[Any], registered: set[int], counted: set[int]) -> int:
    total = 0
    for obj in objs:
        params = [obj] if isinstance(obj, torch.Tensor) else list(obj.parameters())
        for p in params:
            if id(p) not in registered and id(p) not in counted:
                counted.add(id(p))
                total += p.numel()
    return total


def _describe(objs: list[Any]) -> str:
    kinds = collections.Counter(type(o).__name__ for o in objs)
    return ", ".join(f"{n} {k}" for k, n in kinds.most_common(3)) + (", ..." if len(kinds) > 3 else "")


def find_unregistered(model: nn.Module, example_input: Any = None, *, probe_device: str = "auto") -> list[Finding]:
    """Every module, parameter and tensor the model uses but does not register (rules R001-R006, R008).

    ``probe_device``: for a model on the meta device whose forward probe fails there (``.item()``, a data-dependent
    shape, a kernel that wants another dtype), "auto" probes it again on a CPU copy with placeholder weights
    (``placeholder.placeholder_copy``: shared memory, allocations bounded by half the memory available) and returns
    those findings when that probe runs; "meta" never does (``ssdaudit params`` decides between a CPU build with
    random weights and placeholder weights itself, by ``--probe-memory``).

    ``example_input``: handed to ``forward`` by ``core.forward_call`` (a tuple unpacked into positional arguments,
    a dict whose keys all name forward's parameters as keywords, anything else the single argument); ``None`` skips the forward probe (an N003 note says so). The probe runs in
    train and eval mode, and the device-move check (R008) asks which tensors it read ``.to()`` would leave behind.
    ``move_probe.find_device_strays`` is the same question answered by moving a copy to float64. Nothing here
    raises for a forward that fails: the walk's findings are returned with an N004 note (or, when an unregistered
    member sits on another device or dtype than the model, that member's finding names the failure).
    """
    if probe_device == "auto" and example_input is not None and any(t.is_meta for t in model.parameters()):
        return _probe_meta_model(model, example_input)
    walker = AttributeWalker(model)
    walker.run()
    registered = walker.registered_tensors
    counted: set[int] = set()
    findings: list[Finding] = []

    outcome = None
    if example_input is not None:
        outcome = probe_modes(model, example_input, [h.obj for h in walker.hits if isinstance(h.obj, nn.Module)])
    probe = outcome.result if outcome is not None else None
    home = _home(model)
    failure = next(iter(outcome.failures.values()), None) if outcome is not None and probe is None else None

    groups: dict[tuple[str, bool], list[Hit]] = collections.defaultdict(list)
    for hit in walker.hits:
        if hit.torch_internal and not _read_by_forward(hit.obj, probe):
            continue  # torch's own bookkeeping that forward never reads: not the user's container
        groups[(hit.attr_path, hit.via_object or False)].append(hit)
    for (path, via_object), hits in groups.items():
        modules = [h.obj for h in hits if isinstance(h.obj, nn.Module)]
        params_only = [h.obj for h in hits if isinstance(h.obj, torch.Tensor)]
        location = _assignment_location(hits[0].owner, hits[0].attr)
        moved = _move_note(modules + params_only, home, failure)
        if modules:
            n = _unregistered_params(modules, registered, counted)
            container = "a plain object, closure or partial" if via_object else f"a plain {type(_attr_value(hits[0])).__name__}"
            severity = Severity.ERROR if n else Severity.INFO
            if n == 0 and any(_is_mode_dependent(m) for m in modules):
                rule, severity = "R006", Severity.ERROR
                message = f"`{path}` holds {_describe(modules)} in {container}: .eval()/.train() never reach them"
            elif n and _intentionally_hidden(modules, probe):
                rule, severity = "N006", Severity.INFO
                message = (
                    f"`{path}` holds {len(modules)} frozen module(s) ({_describe(modules)}, {n:,} parameters) in {container}, "
                    "kept out of the registry (on purpose?): .to(), .eval() and state_dict() miss them"
                )
            else:
                rule = "R003" if via_object else "R001"
                message = (
                    f"`{path}` holds {len(modules)} module(s) ({_describe(modules)}) with {n:,} parameters in {container}: "
                    "not in parameters(), state_dict() or .to()"
                )
            findings.append(
                RULES[rule].finding(path, message + moved, n, len(modules), location,
                                    {h.member_path: h.obj for h in hits if isinstance(h.obj, nn.Module)}, severity=severity)
            )
        if params_only:
            n = _unregistered_params(params_only, registered, counted)
            findings.append(
                RULES["R002"].finding(path,
                    f"`{path}` holds {len(params_only)} nn.Parameter(s) with {n:,} values outside the registry" + moved,
                    n,
                    0,
                    location,
                    {h.member_path: h.obj for h in hits if isinstance(h.obj, torch.Tensor)},
                )
            )

    if example_input is None:
        findings.append(RULES["N003"].finding("<forward>"))
    elif outcome is not None:
        findings.extend(_probe_notes(outcome, explained=any(_move_note([h.obj], home, failure) for h in walker.hits)))
        if probe is not None:
            findings.extend(_probe_findings(walker, probe, counted))
            findings.extend(_parameter_in_forward_findings(model, probe))

    moves = _dtype_move_probe(model, example_input) if probe is not None else None
    for path, tensor, owner, attr in walker.tensor_attrs:
        if probe is not None and id(tensor) not in probe.used_tensors:
            continue
        if probe is None and _forward_use(owner, attr) == "unread":
            continue  # no pass ran, and the owner's forward never names it: no evidence of use
        findings.append(_tensor_attr_finding(path, tensor, owner, attr, probe, home, moves))
    if probe is not None:
        findings.extend(_device_move_findings(model, walker, probe, findings, moves))
    return findings


def _dtype_move_probe(model: nn.Module, example_input: Any) -> "MoveProbeResult":
    """The dtype-move probe (``move_probe.find_device_strays``) on the input's first sample: run for every model,
    since a move inside forward that follows only the input's device is as invisible to ``.to()`` as a custom
    ``_apply``. It records reads of tensors in the wrong dtype, never waiting for an op to fail."""
    from ssdaudit.registration.move_probe import find_device_strays, first_sample

    return find_device_strays(model, first_sample(example_input))


def _move_kind(name: str, rest: list[Any]) -> str:
    """What a move of a tensor follows, from the function's name and its other arguments: "dtype" (device and
    dtype: ``.to(x)``, ``.type_as(x)``, ``.to(device, dtype)``), "device" (``.to(x.device)``, ``.cuda()``) or
    "fixed" (``.float()``, ``.to(torch.float16)``: one dtype, whatever the model's)."""
    if name in ("type_as",):
        return "dtype"
    if name in ("cuda", "cpu"):
        return "device"
    if name in ("double", "float", "half", "bfloat16", "type"):
        return "fixed"
    if any(isinstance(a, torch.Tensor) for a in rest):
        return "dtype"
    has_dtype = any(isinstance(a, torch.dtype) for a in rest)
    has_device = any(isinstance(a, (torch.device, str, int)) and not isinstance(a, bool) for a in rest)
    return "dtype" if has_dtype or not has_device and rest else "device"


def _read_by_forward(obj: Any, probe: ProbeResult | None) -> bool:
    """The probe saw forward read this tensor, or call this module (or one inside it). No probe: no evidence."""
    if probe is None:
        return False
    if isinstance(obj, torch.Tensor):
        return id(obj) in probe.used_tensors
    return any(id(m) in probe.called for m in obj.modules())


def moved_by_to(model: nn.Module) -> set[int]:
    """Ids of the tensors ``model.to(...)`` converts: ``_apply`` with a function that records its argument and
    returns it unchanged, so the model's own ``_apply`` overrides decide, exactly as for a real move."""
    seen: dict[int, torch.Tensor] = {}

    def record(t: torch.Tensor) -> torch.Tensor:
        seen[id(t)] = t
        return t

    model._apply(record)  # type: ignore[no-untyped-call]
    return set(seen)


def _custom_apply(model: nn.Module) -> bool:
    """A module of the model overrides ``_apply`` outside torch (it may keep tensors from a move)."""
    return any(type(m)._apply is not nn.Module._apply and not type(m).__module__.startswith("torch.")
               for m in model.modules())


def _device_move_findings(model: nn.Module, walker: AttributeWalker, probe: ProbeResult, known: list[Finding],
                          moves: "MoveProbeResult | None") -> list[Finding]:
    """R008: tensors forward read that existed before it and that ``.to()`` would not move, minus those a walk
    finding already names and those forward moves itself before use. Where a module overrides ``_apply``, what
    it keeps can only be seen by really moving: the dtype-move probe (``moves``, already run) decides there."""
    names: dict[int, str] = {}
    for n, t in (*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)):
        names.setdefault(id(t), n)
    module_names = {id(m): n for n, m in model.named_modules()}
    for hit in walker.hits:
        if isinstance(hit.obj, nn.Module):
            for n, t in (*hit.obj.named_parameters(), *hit.obj.named_buffers()):
                names.setdefault(id(t), f"{hit.member_path}.{n}")
            for n, m in hit.obj.named_modules():
                module_names.setdefault(id(m), f"{hit.member_path}.{n}" if n else hit.member_path)
        else:
            names.setdefault(id(hit.obj), hit.member_path)
    for path, tensor, _owner, _attr in walker.tensor_attrs:
        names.setdefault(id(tensor), path)
    if _custom_apply(model) and moves is not None:
        left_behind = {s.name for s in moves.strays if s.name}
        moved = {i for i in probe.preexisting if i in names and names[i] not in left_behind}
    else:
        try:
            moved = moved_by_to(model)
        except Exception:  # an _apply that cannot take an identity function: no verdict
            return []
    covered = [f.path for f in known if f.members]
    groups: dict[str, list[tuple[str | None, torch.Tensor, str]]] = collections.defaultdict(list)
    for i, (tensor, module) in probe.preexisting.items():
        if i in moved or probe.first_use.get(i) in MOVE_FUNCTIONS:
            continue
        name = names.get(i)
        if name is not None and any(name == p or name.startswith(p + ".") for p in covered):
            continue
        reader = module_names.get(id(module), type(module).__name__)
        key = name.rsplit(".", 1)[0] if name and "." in name else (name or f"<{reader or 'model'}>")
        groups[key].append((name, tensor, reader))
    out = []
    for path, items in groups.items():
        values = sum(t.numel() for _, t, _ in items)
        listing = ", ".join(f"{n or 'a tensor'} {tuple(t.shape)}" for n, t, _ in items[:3]) + (", ..." if len(items) > 3 else "")
        if all(n for n, _, _ in items):
            out.append(RULES["R008"].finding(path,
                f"{len(items)} tensor(s) ({values:,} values) that forward reads are not moved by .to() / .cuda() / "
                f".half() (a move to float64 left them as they were; on a GPU they would stay on the CPU): {listing}",
            ))
        else:  # a global, a closure, or a cache made by an earlier call: often keyed by device and dtype, so a note
            out.append(RULES["R008"].finding(
                path,
                f"{len(items)} tensor(s) ({values:,} values) read by `{items[0][2] or 'the model'}`'s forward are "
                "reachable from no attribute, so .to() cannot move them (a global or closure: a bug on a GPU; a cache "
                f"keyed by device and dtype: fine): {listing}",
                severity=Severity.INFO,
            ))
    return out


def _tensor_attr_finding(path: str, tensor: torch.Tensor, owner: nn.Module, attr: str, probe: ProbeResult | None,
                         home: tuple[torch.device, torch.dtype] | None, moves: "MoveProbeResult | None" = None) -> Finding:
    """R004 for a plain tensor attribute forward uses; an N005 note when nothing breaks on a device or dtype move.

    A floating tensor that forward moves with the input's device only (``.to(x.device)``) is R004 too: ``.half()``,
    ``.bfloat16()`` and ``.double()`` never convert it. The dtype-move probe (``moves``) decides; without its
    verdict, the arguments of the move the probe saw."""
    location = _assignment_location(owner, attr)
    shape = tuple(tensor.shape)
    first = probe.first_use.get(id(tensor)) if probe is not None else None
    if probe is None and _forward_use(owner, attr) == "moved":  # no pass ran: the owner's forward source decides
        first = "to"
    if tensor.dim() == 0:
        reason = "0-dim: it mixes with tensors on any device"
    elif first in MOVE_FUNCTIONS:
        if tensor.is_floating_point() and _misses_dtype(path, tensor, probe, moves):
            dtype = _dtype_name(tensor.dtype)
            return RULES["R004"].finding(path,
                f"`{path}` is a plain {shape} {dtype} tensor that forward moves with the input's device only "
                f"(.{first}(...)): .half(), .bfloat16() and .double() never convert it, so it stays {dtype} while "
                "the model runs in float16/bfloat16/float64 (forward mixes dtypes); state_dict() does not save it",
                0, 0, location, {path: tensor})
        reason = (f"forward moves it first (.{first}(...), following the input's device and dtype) on every call: "
                  "on a GPU a host-to-device copy per call, where a buffer would move once")
    else:
        reason = None
    if reason is not None:
        return RULES["N005"].finding(path, f"`{path}` is a plain {shape} tensor that forward uses safely ({reason}); "
                       "state_dict() does not save it", 0, 0, location, {path: tensor})
    note = "" if probe is not None else " (use not verified: no forward probe)"
    how = "returned by forward" if first == "<returned>" else "used by the model"
    where = ""
    if home is not None and tensor.is_floating_point() and (tensor.device, tensor.dtype) != home:
        where = f" (it is {_dtype_name(tensor.dtype)} on {tensor.device}, the model {_dtype_name(home[1])} on {home[0]})"
    return RULES["R004"].finding(path,
        f"`{path}` is a plain {shape} tensor {how}{note}: it is not moved by .to() nor saved in state_dict(){where}",
        0, 0, location, {path: tensor},
    )


def _misses_dtype(path: str, tensor: torch.Tensor, probe: ProbeResult | None, moves: "MoveProbeResult | None") -> bool:
    """Whether forward's own move of ``tensor`` leaves its dtype behind when the model's changes: the dtype-move
    probe saw it read in its old dtype; without a verdict from that probe, the probe's record of the move's
    arguments (device only, or a fixed dtype)."""
    if moves is not None and moves.error is None:
        return any(s.name == path for s in moves.strays)
    return probe is not None and probe.move_kind.get(id(tensor)) in ("device", "fixed")


def _forward_use(owner: nn.Module, attr: str) -> str | None:
    """How the owner's ``forward`` source uses ``self.<attr>``: "unread", "moved" (every read goes through a move
    such as ``.to(x.device)`` or ``.type_as(x)``), "read", or None when the source cannot be read."""
    import ast
    import textwrap

    forward = type(owner).forward
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(forward)))
    except (OSError, TypeError, SyntaxError):
        return None
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    reads = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == attr
             and isinstance(n.value, ast.Name) and n.value.id == "self" and isinstance(n.ctx, ast.Load)]
    if not reads:
        return "unread"
    for read in reads:
        moved = False
        node: ast.AST = read
        while isinstance(method := parents.get(node), ast.Attribute):  # self.x.detach().type_as(y).to(...): follow it
            if method.attr in MOVE_FUNCTIONS:
                moved = True
                break
            call = parents.get(method)
            node = call if isinstance(call, ast.Call) and call.func is method else method
        if not moved:
            return "read"
    return "moved"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _home(model: nn.Module) -> tuple[torch.device, torch.dtype] | None:
    """The (device, dtype) holding most of the model's registered floating-point values."""
    sizes: collections.Counter[tuple[torch.device, torch.dtype]] = collections.Counter()
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            sizes[(t.device, t.dtype)] += t.numel()
    return sizes.most_common(1)[0][0] if sizes else None


def _move_note(objs: list[Any], home: tuple[torch.device, torch.dtype] | None, failure: str | None) -> str:
    """" (.cuda() never moved it: ...; forward fails with: ...)" when these members sit elsewhere than the model."""
    if home is None:
        return ""
    tensors = [t for o in objs for t in ([o] if isinstance(o, torch.Tensor) else [*o.parameters(), *o.buffers()])]
    stray = [t for t in tensors if t.is_floating_point() and (t.device, t.dtype) != home]
    if not stray:
        return ""
    t = stray[0]
    moves = []
    if t.device != home[0]:
        moves.append(f".to({home[0].type!r})/.{home[0].type}()" if home[0].type in ("cuda", "cpu") else f".to({home[0].type!r})")
    if t.dtype != home[1]:
        moves.append(f".to({_dtype_name(home[1])})")
    text = (f"; {' and '.join(moves)} never moved it: it is {_dtype_name(t.dtype)} on {t.device} while the model is "
            f"{_dtype_name(home[1])} on {home[0]}")
    return text + (f"; forward fails with: {failure}" if failure else "")


def _intentionally_hidden(modules: list[nn.Module], probe: ProbeResult | None) -> bool:
    """Frozen (no trainable parameter), or run by forward only while autograd was off (a teacher under no_grad)."""
    params = [p for m in modules for p in m.parameters()]
    if params and not any(p.requires_grad for p in params):
        return True
    if probe is None or not probe.grad_observed or "train" not in probe.modes:
        return False
    ids = [id(m) for mod in modules for m in mod.modules()]
    called = [i for i in ids if i in probe.called]
    return bool(called) and not any(i in probe.with_grad for i in called)


def _probe_notes(outcome: ProbeOutcome, explained: bool) -> list[Finding]:
    if not outcome.failures:
        return []
    if outcome.result is not None:
        (mode, error), = outcome.failures.items()
        ran = outcome.result.modes[0]
        return [RULES["N004"].finding("<forward>", f"the probe ran in {ran} mode only: {mode} mode failed with {error}")]
    error = next(iter(outcome.failures.values()))
    severity = Severity.INFO if explained else Severity.WARNING
    because = " (explained by the unregistered members above)" if explained else ""
    return [RULES["N004"].finding("<forward>", f"forward fails on the example input in train and eval mode{because}: {error}; "
                                  "the checks that need a forward pass (R004, R005, R008) did not run", severity=severity)]


_ONE_MODE = re.compile(r"the probe ran in \w+ mode only: \w+ mode failed with (?P<error>.*)$", re.S)
_NO_MODE = re.compile(r"forward fails on the example input in train and eval mode[^:]*: (?P<error>.*); the checks that need",
                      re.S)


def _probe_meta_model(model: nn.Module, example_input: Any) -> list[Finding]:
    """``find_unregistered`` of a meta model: on meta, and where the probe fails there, on a placeholder copy."""
    from ssdaudit.registration.placeholder import address_space_limit, placeholder_copy, placeholder_input
    from ssdaudit.registration.probe_device import default_budget

    try:  # before the probe: a forward that fails half-way on meta can leave modules half-swapped
        pristine = copy.deepcopy(model)
    except Exception:  # a model that refuses a deep copy: no second probe
        return find_unregistered(model, example_input, probe_device="meta")
    findings = find_unregistered(model, example_input, probe_device="meta")
    if probe_failure(findings) is None:
        return findings
    try:
        budget = default_budget()
        with address_space_limit(budget):
            copied = placeholder_copy(pristine, budget)
            again = find_unregistered(copied, placeholder_input(example_input), probe_device="meta")
    except UserError:
        raise
    except Exception:  # a model that refuses a deep copy, or a copy over the budget: the meta run stands
        return findings
    return again if probe_ran(again) else findings


def probe_failure(findings: Sequence[Finding]) -> str | None:
    """The error of a forward probe that failed in some mode (from its N004 note), or None when every mode ran."""
    for f in findings:
        if f.rule == "N004" and f.path == "<forward>":
            m = _ONE_MODE.match(f.message) or _NO_MODE.match(f.message)
            return m.group("error") if m else f.message
    return None


def probe_ran(findings: Sequence[Finding]) -> bool:
    """Whether a forward probe ran in at least one mode (no N003 note, no N004 note for both modes)."""
    return not any(f.rule == "N003" or (f.rule == "N004" and _NO_MODE.match(f.message)) for f in findings)


def _attr_value(hit: Hit) -> Any:
    return vars(hit.owner).get(hit.attr)


def _parameter_in_forward_findings(model: nn.Module, probe: ProbeResult) -> list[Finding]:
    """R011: an ``nn.Parameter`` (or a fresh leaf with ``requires_grad=True``) that forward built and then used: a
    new weight every call, in no ``parameters()``, never trained nor saved. Parameters of modules built in forward
    are R005's; one that ends up registered on the model (lazy initialisation) is not reported here. One finding
    per place of creation (file:line), counting what one pass builds."""
    inside_created = {id(p) for m in probe.created for p in m.parameters()}
    registered = {id(p) for p in model.parameters()}
    module_names = {id(m): n for n, m in model.named_modules()}
    places: dict[tuple[str | None, str], list[torch.Tensor]] = collections.defaultdict(list)
    for i, (tensor, location, module) in probe.made_params.items():
        if i in inside_created or i in registered or i not in probe.param_reads:
            continue
        places[(location, module_names.get(id(module)) or "<forward>")].append(tensor)
    findings = []
    for (location, owner), tensors in places.items():
        passes = max(1, len(probe.modes))
        per_pass = tensors[: max(1, len(tensors) // passes)]
        n = sum(t.numel() for t in per_pass)
        kind = "nn.Parameter" if isinstance(per_pass[0], nn.Parameter) else "tensor with requires_grad=True"
        shapes = ", ".join(str(tuple(t.shape)) for t in per_pass[:3])
        where = f" at {location}" if location else ""
        whose = "forward()" if owner == "<forward>" else f"`{owner}`'s forward()"
        findings.append(RULES["R011"].finding(owner,
            f"{whose} builds {len(per_pass)} {kind}(s) {shapes} ({n:,} values){where} and uses it: a new "
            "weight on every call, in no parameters(), so no optimizer trains it and state_dict() does not save it",
            n, 0, location))
    return findings


def _probe_findings(walker: AttributeWalker, probe: ProbeResult, counted: set[int]) -> list[Finding]:
    known = set(walker.registered_modules)
    for hit in walker.hits:
        if isinstance(hit.obj, nn.Module):
            known.update(id(m) for m in hit.obj.modules())
    added_ids = {id(m): name for name, m in probe.added}
    strays = {i: m for i, m in probe.called.items() if i not in known or i in added_ids}
    nested = {id(sub) for m in strays.values() for sub in m.modules() if sub is not m}
    roots = [m for i, m in strays.items() if i not in nested]
    by_place: dict[tuple[str, str | None], list[nn.Module]] = collections.defaultdict(list)
    built: set[tuple[Any, ...]] = set()
    for m in roots:
        path, location = added_ids.get(id(m), "<forward>"), probe.created_at.get(id(m))
        if location is not None:  # built anew by each probe pass: count what one pass builds
            kind = (path, location, type(m), tuple(tuple(p.shape) for p in m.parameters()))
            if kind in built:
                continue
            built.add(kind)
        by_place[(path, location)].append(m)
    findings = []
    for (path, location), modules in by_place.items():
        # parameters the model registered before the pass are not hidden by a module forward builds around them
        # (a wrapper swapped in that reuses the old projections, as Hugging Face's set_attention_type does)
        n = _unregistered_params(modules, walker.registered_tensors, counted)
        created = location is not None
        where = "built inside forward()" if created else "called in forward() but reachable from no attribute"
        if path != "<forward>":
            where += f" and registered as `{path}` only then (after the optimizer was built)"
        # one registered during the pass is reached by .eval()/.train() from then on: only new parameters matter
        hidden_mode = path == "<forward>" and any(_is_mode_dependent(m) for m in modules)
        severity = Severity.ERROR if n or hidden_mode else Severity.INFO
        message = f"{_describe(modules)} with {n:,} parameters {where}"
        findings.append(RULES["R005"].finding(path, message, n, len(modules), location,
                                              {f"{path}.{i}": m for i, m in enumerate(modules)}, severity=severity))
    return findings
