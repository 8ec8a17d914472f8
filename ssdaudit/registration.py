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


class ProbeError(RuntimeError):
    """The model's forward failed on the probe input."""


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
    called: dict[int, nn.Module] = field(default_factory=dict)
    created_at: dict[int, str] = field(default_factory=dict)
    used_tensors: set[int] = field(default_factory=set)
    added: dict[str, nn.Module] = field(default_factory=dict)  # registered during forward()


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


def probe_forward(model: nn.Module, example_input: Any, extra_modules: list[nn.Module] = ()) -> ProbeResult:
    """Run one forward pass under observation and leave the model exactly as it was.

    Records every module called (global hooks), where modules built during the pass were created,
    and the ids of all tensors the pass reads. BatchNorm statistics (also those of ``extra_modules``,
    the unregistered ones), RNG state and submodules registered during the pass are restored.
    """
    result = ProbeResult()
    before = dict(model.named_modules())
    before_ids = {id(m) for m in before.values()}
    states = [b for m in (model, *extra_modules) for b in m.buffers()]
    saved_buffers = [b.clone() for b in states]
    rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    def on_call(module, _args):
        result.called.setdefault(id(module), module)

    original_init = nn.Module.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        result.created_at.setdefault(id(self), _caller_location())

    class _Reads(TorchFunctionMode):
        def __torch_function__(self, func, types_, args=(), kwargs=None):
            for leaf in tree_flatten((args, kwargs or {}))[0]:
                if isinstance(leaf, torch.Tensor):
                    result.used_tensors.add(id(leaf))
            return func(*args, **(kwargs or {}))

    handle = nn.modules.module.register_module_forward_pre_hook(on_call)
    nn.Module.__init__ = recording_init
    try:
        with torch.no_grad(), _Reads():
            if isinstance(example_input, tuple):
                model(*example_input)
            else:
                model(example_input)
    except Exception as exc:
        raise ProbeError(f"{exc.__class__.__name__}: {exc}") from exc
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
                    result.added[name] = module
                    del parent._modules[attr]
    return result


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
    """file:line where ``self.<attr>`` is assigned in the owner's class (or its bases)."""
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
    """Every module, parameter and tensor the model uses but does not register (rules R001-R006).

    ``example_input``: a tuple is unpacked into ``forward``'s positional arguments, anything else is
    passed as the single argument; ``None`` skips the forward probe (an N003 note says so).
    Raises ``ProbeError`` when the forward pass fails on the example input.
    """
    walker = _Walker(model)
    walker.run()
    registered = walker.registered_tensors
    counted: set[int] = set()
    findings: list[Finding] = []

    groups: dict[tuple[str, bool], list[_Hit]] = collections.defaultdict(list)
    for hit in walker.hits:
        groups[(hit.attr_path, hit.via_object or False)].append(hit)
    for (path, via_object), hits in groups.items():
        modules = [h.obj for h in hits if isinstance(h.obj, nn.Module)]
        params_only = [h.obj for h in hits if isinstance(h.obj, torch.Tensor)]
        location = _assignment_location(hits[0].owner, hits[0].attr)
        if modules:
            n = _unregistered_params(modules, registered, counted)
            container = "a plain object, closure or partial" if via_object else f"a plain {type(_attr_value(hits[0])).__name__}"
            if n == 0 and any(_is_mode_dependent(m) for m in modules):
                rule, severity = "R006", Severity.ERROR
                message = f"`{path}` holds {_describe(modules)} in {container}: .eval()/.train() never reach them"
            else:
                rule = "R003" if via_object else "R001"
                severity = Severity.ERROR if n else Severity.INFO
                message = (
                    f"`{path}` holds {len(modules)} module(s) ({_describe(modules)}) with {n:,} parameters in {container}: "
                    "not in parameters(), state_dict() or .to()"
                )
            findings.append(
                Finding(rule, severity, path, message, n, len(modules), location, {h.member_path: h.obj for h in hits if isinstance(h.obj, nn.Module)})
            )
        if params_only:
            n = _unregistered_params(params_only, registered, counted)
            findings.append(
                Finding(
                    "R002",
                    Severity.ERROR,
                    path,
                    f"`{path}` holds {len(params_only)} nn.Parameter(s) with {n:,} values outside the registry",
                    n,
                    0,
                    location,
                    {h.member_path: h.obj for h in hits if isinstance(h.obj, torch.Tensor)},
                )
            )

    probe = None
    if example_input is None:
        findings.append(Finding("N003", Severity.INFO, "<forward>", "no example input: the forward probe was skipped"))
    else:
        probe = probe_forward(model, example_input, [h.obj for h in walker.hits if isinstance(h.obj, nn.Module)])
        findings.extend(_probe_findings(walker, probe, counted))

    for path, tensor, owner, attr in walker.tensor_attrs:
        if probe is not None and id(tensor) not in probe.used_tensors:
            continue
        note = "" if probe is not None else " (use not verified: no forward probe)"
        findings.append(
            Finding(
                "R004",
                Severity.WARNING,
                path,
                f"`{path}` is a plain {tuple(tensor.shape)} tensor used by the model{note}: it is not moved by .to() "
                "nor saved in state_dict()",
                0,
                0,
                _assignment_location(owner, attr),
                {path: tensor},
            )
        )
    return findings


def _attr_value(hit: _Hit) -> Any:
    return vars(hit.owner).get(hit.attr)


def _probe_findings(walker: _Walker, probe: ProbeResult, counted: set[int]) -> list[Finding]:
    known = set(walker.registered_modules)
    for hit in walker.hits:
        if isinstance(hit.obj, nn.Module):
            known.update(id(m) for m in hit.obj.modules())
    added_ids = {id(m): name for name, m in probe.added.items()}
    strays = {i: m for i, m in probe.called.items() if i not in known or i in added_ids}
    nested = {id(sub) for m in strays.values() for sub in m.modules() if sub is not m}
    roots = [m for i, m in strays.items() if i not in nested]
    by_place: dict[tuple[str, str | None], list[nn.Module]] = collections.defaultdict(list)
    for m in roots:
        path = added_ids.get(id(m), "<forward>")
        by_place[(path, probe.created_at.get(id(m)))].append(m)
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
