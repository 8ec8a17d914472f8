"""The attribute walk: every module, parameter and tensor a model reaches through plain containers, objects,
closures and ``functools.partial``, and which of them the registry (``modules()``/``parameters()``/``buffers()``)
misses. Shared by the forward probe (registration), the dtype-move probe, gradflow and the round trip.
"""

from __future__ import annotations

import collections
import functools
import re
import types
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn

# Attributes every nn.Module has; everything else in a module's __dict__ is the user's.
_MODULE_INTERNALS = frozenset(nn.Module().__dict__)
_ATOMS = (str, bytes, bytearray, int, float, complex, bool, type(None), Enum, torch.dtype, torch.device, type, types.ModuleType)
_MAX_DEPTH = 12
# Functions that move or convert their first argument: forward handling a tensor itself.
MOVE_FUNCTIONS = frozenset({"to", "type_as", "type", "cuda", "cpu", "double", "float", "half", "bfloat16"})


@dataclass
class Hit:
    attr_path: str  # the registered module's attribute that leads to it, e.g. "backbone"
    member_path: str  # the dotted name the member would have once registered, e.g. "backbone.3"
    obj: Any  # nn.Module or nn.Parameter
    via_object: bool  # reached through a plain object, closure or partial (R003) rather than containers
    owner: nn.Module
    attr: str
    torch_internal: bool = False  # a private attribute of a torch.nn class (its own bookkeeping, not a user container)


class AttributeWalker:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.registered_modules = {id(m) for m in model.modules()}
        self.registered_tensors = {id(t) for t in model.parameters()} | {id(b) for b in model.buffers()}
        self.seen: set[int] = set()
        self.hits: list[Hit] = []
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
                if is_torch_internal(module, name):
                    for hit in self.hits:
                        if hit.owner is module and hit.attr == name:
                            hit.torch_internal = True

    def _visit(self, value: Any, attr_path: str, member: str, via_object: bool, depth: int, owner: nn.Module,
               attr: str) -> None:
        if depth > _MAX_DEPTH or isinstance(value, _ATOMS) or id(value) in self.seen:
            return
        self.seen.add(id(value))
        visit = functools.partial(self._visit, attr_path=attr_path, depth=depth + 1, owner=owner, attr=attr)
        if isinstance(value, nn.Module):
            if id(value) not in self.registered_modules:
                self.hits.append(Hit(attr_path, member, value, via_object, owner, attr))
                self.seen.update(id(m) for m in value.modules())
            return
        if isinstance(value, torch.Tensor):
            if isinstance(value, nn.Parameter) and id(value) not in self.registered_tensors:
                self.hits.append(Hit(attr_path, member, value, via_object, owner, attr))
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


def module_internals() -> frozenset[str]:
    """The attribute names every ``nn.Module`` has in its ``__dict__`` (its registries, hooks, ``training``)."""
    return _MODULE_INTERNALS


def is_torch_internal(module: nn.Module, attr: str) -> bool:
    """``attr`` is a private attribute (``_name``) of a module that is a torch.nn class or subclasses one (other
    than ``nn.Module`` itself): torch's own bookkeeping, such as an RNN's ``_flat_weights``, which may still hold a
    parameter a wrapper removed from ``_parameters``. Whether forward reads it decides (the probe's evidence)."""
    if not attr.startswith("_"):
        return False
    return any(cls.__module__.startswith("torch.nn") and cls is not nn.Module for cls in type(module).__mro__)


def _key(k: Any) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", str(k))


def unregistered_tensor_names(model: nn.Module) -> dict[int, str]:
    """id(tensor) -> the dotted name it would have once registered, for tensors the attribute walk reaches
    but ``model.parameters()``/``buffers()`` do not (parameters of modules in plain lists, loose parameters,
    plain tensor attributes)."""
    walker = AttributeWalker(model)
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
    walker = AttributeWalker(model)
    walker.run()
    names: dict[int, str] = {}
    for hit in walker.hits:
        if isinstance(hit.obj, nn.Module):
            for n, m in hit.obj.named_modules():
                names.setdefault(id(m), f"{hit.member_path}.{n}" if n else hit.member_path)
    return names
