"""The model index: one walk of the model, shared by every rule of ``params``.

What the registry holds (module and tensor ids), what the attribute walk found outside it (``walk.Hit``s and plain
tensor attributes), and the dotted names of everything by id. The name tables and the model's home (device,
dtype) are computed on first use, after the forward probe (a lazy module materialises its parameters there), and
then once per audit.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from ssdaudit.registration.walk import AttributeWalker, Hit


@dataclass(frozen=True)
class ModelIndex:
    """The registered and unregistered members of ``model``. ``hits``: modules and parameters the registry misses;
    ``tensor_attrs``: plain tensor attributes (path, tensor, owner module, attribute name)."""

    model: nn.Module
    registered_modules: frozenset[int]
    registered_tensors: frozenset[int]
    hits: tuple[Hit, ...]
    tensor_attrs: tuple[tuple[str, torch.Tensor, nn.Module, str], ...]

    @classmethod
    def of(cls, model: nn.Module) -> "ModelIndex":
        """Walk ``model`` once (``walk.AttributeWalker``)."""
        walker = AttributeWalker(model)
        walker.run()
        return cls(model, frozenset(walker.registered_modules), frozenset(walker.registered_tensors),
                   tuple(walker.hits), tuple(walker.tensor_attrs))

    @property
    def hidden_modules(self) -> list[nn.Module]:
        """The unregistered modules the walk reached (the probe restores their state too)."""
        return [h.obj for h in self.hits if isinstance(h.obj, nn.Module)]

    @cached_property
    def registered_parameters(self) -> frozenset[int]:
        return frozenset(id(p) for p in self.model.parameters())

    @cached_property
    def module_names(self) -> dict[int, str]:
        """id -> dotted name of every registered module ("" for the model)."""
        return {id(m): n for n, m in self.model.named_modules()}

    @cached_property
    def member_module_names(self) -> dict[int, str]:
        """``module_names`` plus the modules inside the walk's hits, by the name they would get once registered."""
        names = dict(self.module_names)
        for hit in self.hits:
            if isinstance(hit.obj, nn.Module):
                for n, m in hit.obj.named_modules():
                    names.setdefault(id(m), f"{hit.member_path}.{n}" if n else hit.member_path)
        return names

    @cached_property
    def tensor_names(self) -> dict[int, str]:
        """id -> dotted name of every tensor the model holds: registered (tied ones by their first name), inside the
        walk's hits, and plain tensor attributes."""
        names: dict[int, str] = {}
        model = self.model
        for n, t in (*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)):
            names.setdefault(id(t), n)
        for hit in self.hits:
            if isinstance(hit.obj, nn.Module):
                for n, t in (*hit.obj.named_parameters(), *hit.obj.named_buffers()):
                    names.setdefault(id(t), f"{hit.member_path}.{n}")
            else:
                names.setdefault(id(hit.obj), hit.member_path)
        for path, tensor, _owner, _attr in self.tensor_attrs:
            names.setdefault(id(tensor), path)
        return names

    @cached_property
    def home(self) -> tuple[torch.device, torch.dtype] | None:
        """The (device, dtype) holding most of the model's registered floating-point values."""
        sizes: collections.Counter[tuple[torch.device, torch.dtype]] = collections.Counter()
        for t in (*self.model.parameters(), *self.model.buffers()):
            if t.is_floating_point():
                sizes[(t.device, t.dtype)] += t.numel()
        return sizes.most_common(1)[0][0] if sizes else None

    @cached_property
    def custom_apply(self) -> bool:
        """A module of the model overrides ``_apply`` outside torch (it may keep tensors from a move)."""
        return any(type(m)._apply is not nn.Module._apply and not type(m).__module__.startswith("torch.")
                   for m in self.model.modules())
