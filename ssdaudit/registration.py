"""Finding unregistered members: an attribute walk over the model plus a forward probe.

The walk starts at every registered module's ``__dict__`` and follows plain containers, plain objects,
closures and ``functools.partial`` to any depth, reporting modules and parameters that
``model.modules()`` / ``model.parameters()`` do not reach. The probe runs one forward pass with global
module hooks to catch modules that run but are not part of the model (built inside ``forward()``, or
hidden where no attribute reaches), and records which tensors the forward reads (for R004).
"""

from __future__ import annotations

import collections
import functools
import inspect
import re
import types
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .errors import UserError
from .findings import Finding, Severity

# Attributes every nn.Module has; everything else in a module's __dict__ is the user's.
_MODULE_INTERNALS = frozenset(nn.Module().__dict__)
_ATOMS = (str, bytes, bytearray, int, float, complex, bool, type(None), Enum, torch.dtype, torch.device, type, types.ModuleType)
_MAX_DEPTH = 12
_MODE_DEPENDENT = (
    nn.modules.dropout._DropoutNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.RReLU,
)


class ProbeError(UserError, RuntimeError):
    """The model's forward failed on the probe input."""

    kind = "probe"


@dataclass
class _Hit:
    attr_path: str  # the registered module's attribute that leads to it, e.g. "backbone"
    member_path: str  # the dotted name the member would have once registered, e.g. "backbone.3"
    obj: Any  # nn.Module or nn.Parameter
    via_object: bool  # reached through a plain object, closure or partial (R003) rather than containers
    owner: nn.Module
    attr: str


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


class _Walker:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.registered_modules = {id(m) for m in model.modules()}
        self.registered_tensors = {id(t) for t in model.parameters()} | {id(b) for b in model.buffers()}
        self.seen: set[int] = set()
        self.hits: list[_Hit] = []
        self.tensor_attrs: list[tuple[str, torch.Tensor, nn.Module, str]] = []

    def run(self) -> None:
        for mpath, module in self.model.named_modules():
            for name, value in list(vars(module).items()):
                if name in _MODULE_INTERNALS:
                    continue
                path = f"{mpath}.{name}" if mpath else name
                if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                    if id(value) not in self.registered_tensors:
                        self.tensor_attrs.append((path, value, module, name))
                    continue
                self._visit(value, path, path, False, 0, module, name)

    def _visit(self, value: Any, attr_path: str, member: str, via_object: bool, depth: int, owner, attr) -> None:
        if depth > _MAX_DEPTH or isinstance(value, _ATOMS) or id(value) in self.seen:
            return
        self.seen.add(id(value))
        visit = functools.partial(self._visit, attr_path=attr_path, depth=depth + 1, owner=owner, attr=attr)
        if isinstance(value, nn.Module):
            if id(value) not in self.registered_modules:
                self.hits.append(_Hit(attr_path, member, value, via_object, owner, attr))
                self.seen.update(id(m) for m in value.modules())
            return
        if isinstance(value, torch.Tensor):
            if isinstance(value, nn.Parameter) and id(value) not in self.registered_tensors:
                self.hits.append(_Hit(attr_path, member, value, via_object, owner, attr))
            return
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
            for k in value._fields:
                visit(getattr(value, k), member=f"{member}.{k}", via_object=True)
        elif isinstance(value, (list, tuple, collections.deque)):
            for i, v in enumerate(value):
                visit(v, member=f"{member}.{i}", via_object=via_object)
        elif isinstance(value, (set, frozenset)):
            for i, v in enumerate(sorted(value, key=repr)):
                visit(v, member=f"{member}.{i}", via_object=via_object)
        elif isinstance(value, dict):
            for k, v in value.items():
                visit(v, member=f"{member}.{_key(k)}", via_object=via_object)
        elif isinstance(value, functools.partial):
            for i, v in enumerate((value.func, *value.args, *value.keywords.values())):
                visit(v, member=f"{member}.{i}", via_object=True)
        elif isinstance(value, types.FunctionType):
            for i, cell in enumerate(value.__closure__ or ()):
                try:
                    visit(cell.cell_contents, member=f"{member}.{i}", via_object=True)
                except ValueError:  # empty cell
                    pass
        elif isinstance(value, types.MethodType):
            visit(value.__self__, member=member, via_object=True)
        elif hasattr(value, "__dict__") and not callable(getattr(value, "__self__", None)):
            for k, v in list(vars(value).items()):
                visit(v, member=f"{member}.{k}", via_object=True)
        elif hasattr(type(value), "__slots__"):
            for k in getattr(type(value), "__slots__", ()):
                if hasattr(value, k):
                    visit(getattr(value, k), member=f"{member}.{k}", via_object=True)


def _key(k: Any) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", str(k))


def probe_forward(
    model: nn.Module, example_input: Any, extra_modules: list[nn.Module] = (), grad: bool = False
) -> ProbeResult:
    """Run one forward pass under observation and leave the model exactly as it was.

    Records every module called (global hooks, and whether autograd was recording), where modules built during the
    pass were created, the tensors the pass reads (and the first function applied to each) or returns. BatchNorm
    statistics (also those of ``extra_modules``, the unregistered ones), RNG state and submodules registered during
    the pass are restored. ``grad=False`` runs under ``torch.no_grad()``. Raises ``ProbeError`` if forward fails.
    """
    result = ProbeResult(grad_observed=grad)
    before = dict(model.named_modules())
    before_ids = {id(m) for m in before.values()}
    states = [b for m in (model, *extra_modules) for b in m.buffers()]
    saved_buffers = [b.detach().clone() for b in states]
    rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    def on_call(module, _args):
        result.called.setdefault(id(module), module)
        if torch.is_grad_enabled():
            result.with_grad.add(id(module))

    original_init = nn.Module.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        result.created.append(self)
        result.created_at.setdefault(id(self), _caller_location())

    class _Reads(TorchFunctionMode):
        def __torch_function__(self, func, types_, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            for leaf in tree_flatten((args, kwargs or {}))[0]:
                if isinstance(leaf, torch.Tensor):
                    result.used_tensors.add(id(leaf))
                    result.first_use.setdefault(id(leaf), name)
            return func(*args, **(kwargs or {}))

    handle = nn.modules.module.register_module_forward_pre_hook(on_call)
    nn.Module.__init__ = recording_init
    try:
        with torch.set_grad_enabled(grad), _Reads():
            output = model(*example_input) if isinstance(example_input, tuple) else model(example_input)
        # Tensors handed back as they are (priors for the loss) miss .to() as much as those computed with.
        for leaf in tree_flatten(output)[0]:
            if isinstance(leaf, torch.Tensor):
                result.used_tensors.add(id(leaf))
                result.first_use.setdefault(id(leaf), "<returned>")
        del output
    except UserError:
        raise
    except Exception as exc:
        raise ProbeError(f"{exc.__class__.__name__}: {_one_line(exc)}") from exc
    finally:
        handle.remove()
        nn.Module.__init__ = original_init
        with torch.no_grad():
            for b, saved in zip(states, saved_buffers):
                if b.shape == saved.shape:
                    b.copy_(saved)
        torch.random.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        for name, module in list(model.named_modules()):
            if name and id(module) not in before_ids:
                parent_name, _, attr = name.rpartition(".")
                parent = before.get(parent_name)
                if parent is not None and attr in parent._modules:
                    result.added.append((name, module))
                    del parent._modules[attr]
    return result


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else exc.__class__.__name__)[:300]


@dataclass
class ProbeOutcome:
    """The forward probe in both modes: the merged observations, and what failed (mode -> error)."""

    result: ProbeResult | None
    failures: dict[str, str]


def probe_modes(model: nn.Module, example_input: Any, extra_modules: list[nn.Module] = ()) -> ProbeOutcome:
    """Probe forward in train mode (autograd recording, as in training) and in eval mode (under no_grad).

    Forward paths that run only in one mode (a tensor read only at inference) are seen either way. Every module's
    mode is restored afterwards. A mode whose pass fails is recorded in ``failures``; the other still counts.
    """
    modules = [*model.modules(), *(m for e in extra_modules for m in e.modules())]
    modes = [(m, m.training) for m in modules]
    merged: ProbeResult | None = None
    failures: dict[str, str] = {}
    try:
        for mode in ("train", "eval"):
            for m in modules:
                m.training = mode == "train"
            try:
                one = probe_forward(model, example_input, extra_modules, grad=mode == "train")
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


_SKIP_DIRS = (str(Path(torch.__file__).parent), str(Path(__file__).parent))


def _caller_location() -> str | None:
    """file:line of the first frame outside torch and ssdaudit (where a module was constructed)."""
    frame = inspect.currentframe()
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_SKIP_DIRS) and not filename.startswith("<frozen"):
            return f"{_relative(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


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
        for offset, line in enumerate(lines):
            if pattern.search(line):
                return f"{_relative(filename)}:{start + offset}"
        line = _setattr_line(lines, attr)
        if line is not None:
            return f"{_relative(filename)}:{start + line - 1}"
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


def find_unregistered(model: nn.Module, example_input: Any = None) -> list[Finding]:
    """Every module, parameter and tensor the model uses but does not register (rules R001-R006, R008).

    ``example_input``: a tuple is unpacked into ``forward``'s positional arguments, anything else is
    passed as the single argument; ``None`` skips the forward probe (an N003 note says so). The probe runs in
    train and eval mode (the device-move check, R008, is ``move_probe.device_move_findings``). Nothing here
    raises for a forward that fails: the walk's findings are returned with an N004 note (or, when an unregistered
    member sits on another device or dtype than the model, that member's finding names the failure).
    """
    walker = _Walker(model)
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

    groups: dict[tuple[str, bool], list[_Hit]] = collections.defaultdict(list)
    for hit in walker.hits:
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
                Finding(rule, severity, path, message + moved, n, len(modules), location,
                        {h.member_path: h.obj for h in hits if isinstance(h.obj, nn.Module)})
            )
        if params_only:
            n = _unregistered_params(params_only, registered, counted)
            findings.append(
                Finding(
                    "R002",
                    Severity.ERROR,
                    path,
                    f"`{path}` holds {len(params_only)} nn.Parameter(s) with {n:,} values outside the registry" + moved,
                    n,
                    0,
                    location,
                    {h.member_path: h.obj for h in hits if isinstance(h.obj, torch.Tensor)},
                )
            )

    if example_input is None:
        findings.append(Finding("N003", Severity.INFO, "<forward>", "no example input: the forward probe was skipped"))
    elif outcome is not None:
        findings.extend(_probe_notes(outcome, explained=any(_move_note([h.obj], home, failure) for h in walker.hits)))
        if probe is not None:
            findings.extend(_probe_findings(walker, probe, counted))

    for path, tensor, owner, attr in walker.tensor_attrs:
        if probe is not None and id(tensor) not in probe.used_tensors:
            continue
        if probe is None and _forward_use(owner, attr) == "unread":
            continue  # no pass ran, and the owner's forward never names it: no evidence of use
        findings.append(_tensor_attr_finding(path, tensor, owner, attr, probe, home))
    return findings


# Functions that move or convert their first argument: forward handling a tensor itself.
MOVE_FUNCTIONS = frozenset({"to", "type_as", "type", "cuda", "cpu", "double", "float", "half", "bfloat16"})


def _tensor_attr_finding(path: str, tensor: torch.Tensor, owner: nn.Module, attr: str, probe: ProbeResult | None,
                         home: tuple[torch.device, torch.dtype] | None) -> Finding:
    """R004 for a plain tensor attribute forward uses; an N005 note when nothing breaks on a device move."""
    location = _assignment_location(owner, attr)
    shape = tuple(tensor.shape)
    first = probe.first_use.get(id(tensor)) if probe is not None else None
    if probe is None and _forward_use(owner, attr) == "moved":  # no pass ran: the owner's forward source decides
        first = "to"
    if tensor.dim() == 0:
        reason = "0-dim: it mixes with tensors on any device"
    elif first in MOVE_FUNCTIONS:
        reason = f"forward moves it first (.{first}(...)) on every call"
    else:
        reason = None
    if reason is not None:
        return Finding("N005", Severity.INFO, path, f"`{path}` is a plain {shape} tensor that forward uses safely ({reason}); "
                       "state_dict() does not save it", 0, 0, location, {path: tensor})
    note = "" if probe is not None else " (use not verified: no forward probe)"
    how = "returned by forward" if first == "<returned>" else "used by the model"
    where = ""
    if home is not None and tensor.is_floating_point() and (tensor.device, tensor.dtype) != home:
        where = f" (it is {_dtype_name(tensor.dtype)} on {tensor.device}, the model {_dtype_name(home[1])} on {home[0]})"
    return Finding(
        "R004", Severity.WARNING, path,
        f"`{path}` is a plain {shape} tensor {how}{note}: it is not moved by .to() nor saved in state_dict(){where}",
        0, 0, location, {path: tensor},
    )


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
    for node in reads:
        moved = False
        while isinstance(parents.get(node), ast.Attribute):  # self.x.detach().type_as(y).to(...): follow the chain
            method = parents[node]
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
    sizes: collections.Counter = collections.Counter()
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
        return [Finding("N004", Severity.INFO, "<forward>", f"the probe ran in {ran} mode only: {mode} mode failed with {error}")]
    error = next(iter(outcome.failures.values()))
    severity = Severity.INFO if explained else Severity.WARNING
    because = " (explained by the unregistered members above)" if explained else ""
    return [Finding("N004", severity, "<forward>", f"forward fails on the example input in train and eval mode{because}: {error}; "
                    "the checks that need a forward pass (R004, R005, R008) did not run")]


def _attr_value(hit: _Hit) -> Any:
    return vars(hit.owner).get(hit.attr)


def _probe_findings(walker: _Walker, probe: ProbeResult, counted: set[int]) -> list[Finding]:
    known = set(walker.registered_modules)
    for hit in walker.hits:
        if isinstance(hit.obj, nn.Module):
            known.update(id(m) for m in hit.obj.modules())
    added_ids = {id(m): name for name, m in probe.added}
    strays = {i: m for i, m in probe.called.items() if i not in known or i in added_ids}
    nested = {id(sub) for m in strays.values() for sub in m.modules() if sub is not m}
    roots = [m for i, m in strays.items() if i not in nested]
    by_place: dict[tuple[str, str | None], list[nn.Module]] = collections.defaultdict(list)
    built: set[tuple] = set()
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
        n = _unregistered_params(modules, set(), counted)
        created = location is not None
        where = "built inside forward()" if created else "called in forward() but reachable from no attribute"
        if path != "<forward>":
            where += f" and registered as `{path}` only then (after the optimizer was built)"
        severity = Severity.ERROR if n or any(_is_mode_dependent(m) for m in modules) else Severity.INFO
        message = f"{_describe(modules)} with {n:,} parameters {where}"
        findings.append(Finding("R005", severity, path, message, n, len(modules), location, {f"{path}.{i}": m for i, m in enumerate(modules)}))
    return findings


def unregistered_tensor_names(model: nn.Module) -> dict[int, str]:
    """id(tensor) -> the dotted name it would have once registered, for tensors the attribute walk reaches
    but ``model.parameters()``/``buffers()`` do not (parameters of modules in plain lists, loose parameters,
    plain tensor attributes)."""
    walker = _Walker(model)
    walker.run()
    names: dict[int, str] = {}
    for hit in walker.hits:
        if isinstance(hit.obj, nn.Module):
            for n, t in list(hit.obj.named_parameters()) + list(hit.obj.named_buffers()):
                names.setdefault(id(t), f"{hit.member_path}.{n}")
        else:
            names.setdefault(id(hit.obj), hit.member_path)
    for path, tensor, _owner, _name in walker.tensor_attrs:
        names.setdefault(id(tensor), path)
    return names


def unregistered_module_names(model: nn.Module) -> dict[int, str]:
    """id(module) -> the dotted name it would have once registered, for modules the attribute walk reaches but
    ``model.modules()`` does not (their submodules too)."""
    walker = _Walker(model)
    walker.run()
    names: dict[int, str] = {}
    for hit in walker.hits:
        if isinstance(hit.obj, nn.Module):
            for n, m in hit.obj.named_modules():
                names.setdefault(id(m), f"{hit.member_path}.{n}" if n else hit.member_path)
    return names
