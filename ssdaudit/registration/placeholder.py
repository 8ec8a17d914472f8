"""A CPU copy of a meta-built model with placeholder weights: a forward probe for models too large to build.

The forward probe (R004, R005, R008) needs a forward pass. On the meta device many models cannot run one
(``.item()``, data-dependent shapes, kernels that want a dtype), and a real CPU build with random weights needs the
model's full size in memory: tens or hundreds of GiB for today's language models. The probe asks *which tensors and
modules forward reaches*, not what it computes, so the weights' values do not matter. ``placeholder_copy`` turns a
meta model into a CPU model whose parameters share a few small random blocks through stride-0 views: a 7B model
probes in about 1 GiB. Every parameter keeps its shape, dtype, name, ``requires_grad`` and identity (tied weights
stay tied); buffers and plain tensor attributes are materialised (they hold positions, masks and tables, and are
small), with random values for floating point, zeros for integers and ``True`` for booleans.

Limits: a forward that writes into a parameter in place fails on a stride-0 view (the probe then reports N004);
each layer still computes at its full size, so the time is that of a real forward on the CPU.
``address_space_limit`` bounds what such a forward may allocate, so that a model too large to run ends in a
``RuntimeError`` the probe reports, never in the system's out-of-memory killer.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

# A parameter of 3 or more dimensions gets a real block for its last two dimensions, shared by every parameter of
# that shape: grouped matrix products (mixture-of-experts layers) reject a stride-0 matrix. The blocks may take this
# share of the memory budget (BLOCK_LIMIT elements each without one); a parameter whose block does not fit is a
# view of one random row instead.
BLOCK_SHARE = 0.25
BLOCK_LIMIT = 2**26
_SCALE = 0.02  # the spread of placeholder weights: the usual initialiser's, so activations stay finite


class _Pools:
    """Random rows and blocks per dtype and shape, shared by every placeholder of that kind."""

    def __init__(self, block_bytes: int | None = None) -> None:
        self.rows: dict[torch.dtype, torch.Tensor] = {}
        self.blocks: dict[tuple[tuple[int, ...], torch.dtype], torch.Tensor] = {}
        self.block_bytes_left = block_bytes  # None: each block up to BLOCK_LIMIT elements

    def fits(self, shape: tuple[int, ...], dtype: torch.dtype) -> bool:
        """Whether a block of ``shape`` exists or can still be made within the budget."""
        if (shape, dtype) in self.blocks:
            return True
        n = shape[0] * shape[1]
        if self.block_bytes_left is None:
            return n <= BLOCK_LIMIT
        return n * torch.empty((), dtype=dtype).element_size() <= self.block_bytes_left

    def row(self, n: int, dtype: torch.dtype) -> torch.Tensor:
        pool = self.rows.get(dtype)
        if pool is None or pool.numel() < n:
            pool = _values((max(n, 4096),), dtype)
            self.rows[dtype] = pool
        return pool[:n]

    def block(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        key = (shape, dtype)
        if key not in self.blocks:
            self.blocks[key] = _values(shape, dtype)
            if self.block_bytes_left is not None:
                self.block_bytes_left -= self.blocks[key].numel() * self.blocks[key].element_size()
        return self.blocks[key]


def _values(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Real values of ``shape``: normal(0, 0.02) for floating and complex dtypes, zeros for integers, True for
    booleans (a mask that keeps everything)."""
    if dtype.is_floating_point or dtype.is_complex:
        return (torch.randn(shape) * _SCALE).to(dtype)
    if dtype is torch.bool:
        return torch.ones(shape, dtype=dtype)
    return torch.zeros(shape, dtype=dtype)


def placeholder_tensor(t: torch.Tensor, pools: _Pools) -> torch.Tensor:
    """A CPU tensor of ``t``'s shape and dtype whose memory is shared: a view of a random row (stride 0 on every
    dimension but the last), or of a shared block for its last two dimensions. Values are placeholders."""
    shape = tuple(t.shape)
    if t.dim() == 0:
        return _values((), t.dtype)
    if t.dim() >= 3 and pools.fits(shape[-2:], t.dtype):
        return pools.block(shape[-2:], t.dtype).expand(shape)
    return pools.row(shape[-1], t.dtype).expand(shape)


def _materialised(t: torch.Tensor) -> torch.Tensor:
    return _values(tuple(t.shape), t.dtype)


class _Converter:
    """Replaces meta tensors with CPU ones across a (deep-copied) model, in place: parameters by placeholders,
    buffers and plain tensors by materialised values. The same meta tensor maps to the same CPU tensor everywhere
    (``memo``), and each module is converted once (``done``), also one held outside the registry (in a plain list
    or object: the probe must reach it as forward does)."""

    def __init__(self, pools: _Pools) -> None:
        self.pools = pools
        self.memo: dict[int, Any] = {}
        self.done: set[int] = set()

    def parameter(self, p: nn.Parameter) -> nn.Parameter:
        if not p.is_meta:
            return p
        if id(p) not in self.memo:
            self.memo[id(p)] = nn.Parameter(placeholder_tensor(p, self.pools), requires_grad=p.requires_grad)
        converted: nn.Parameter = self.memo[id(p)]
        return converted

    def tensor(self, t: torch.Tensor) -> torch.Tensor:
        if not t.is_meta:
            return t
        if id(t) not in self.memo:
            self.memo[id(t)] = _materialised(t)
        converted: torch.Tensor = self.memo[id(t)]
        return converted

    def module(self, root: nn.Module) -> None:
        for module in root.modules():
            if id(module) in self.done:
                continue
            self.done.add(id(module))
            for name, p in list(module._parameters.items()):
                if p is not None:
                    module._parameters[name] = self.parameter(p)
            for name, b in list(module._buffers.items()):
                if b is not None:
                    module._buffers[name] = self.tensor(b)
            for name, value in list(vars(module).items()):
                if name in ("_parameters", "_buffers", "_modules"):
                    continue
                converted = self.value(value)
                if converted is not value:
                    object.__setattr__(module, name, converted)

    def value(self, value: Any, depth: int = 0) -> Any:
        """A plain attribute with its meta tensors replaced (in lists, tuples and dicts, a few levels deep, and in
        modules held there); the same object where nothing changes."""
        if isinstance(value, nn.Parameter):
            return self.parameter(value)
        if isinstance(value, torch.Tensor):
            return self.tensor(value)
        if isinstance(value, nn.Module):
            self.module(value)
            return value
        if depth >= 3:
            return value
        if isinstance(value, list):
            for i, item in enumerate(value):
                value[i] = self.value(item, depth + 1)
            return value
        if isinstance(value, dict):
            for key, item in list(value.items()):
                value[key] = self.value(item, depth + 1)
            return value
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            items = tuple(self.value(item, depth + 1) for item in value)
            return value if all(a is b for a, b in zip(items, value)) else items
        return value


def placeholder_copy(model: nn.Module, budget: int | None = None) -> nn.Module:
    """A CPU copy of the meta-built ``model`` with placeholder weights, for the forward probe.

    Parameters become ``nn.Parameter`` views of shared random memory (``placeholder_tensor``): the copy's memory is
    that of its distinct row lengths and block shapes, not of its parameter count. Buffers and plain tensor
    attributes of modules (also inside lists, tuples and dicts) are materialised at full size; modules held outside
    the registry (a plain list of layers) are converted like registered ones. The same meta tensor maps to the same
    CPU tensor everywhere, so tied parameters stay one object. ``model`` itself is not changed. ``budget``: bytes
    the probe may allocate; a quarter of it may go to the shared blocks of 3-D parameters (None: each block up to
    ``BLOCK_LIMIT`` elements). Returns the copy in ``model``'s train/eval mode."""
    copied = copy.deepcopy(model)
    _Converter(_Pools(int(budget * BLOCK_SHARE) if budget is not None else None)).module(copied)
    return copied


def placeholder_input(example: Any) -> Any:
    """The probe input with its meta tensors replaced by CPU tensors: token ids (integers) in 0..1, valid for any
    vocabulary; floating values uniform in [0, 1); booleans True. Other values pass through."""

    def convert(t: Any) -> Any:
        if not isinstance(t, torch.Tensor) or not t.is_meta:
            return t
        if t.dtype.is_floating_point:
            return torch.rand(t.shape, dtype=t.dtype)
        if t.dtype is torch.bool:
            return torch.ones(t.shape, dtype=torch.bool)
        if t.dtype.is_complex:
            return torch.randn(t.shape, dtype=t.dtype)
        return torch.randint(0, 2, t.shape, dtype=t.dtype)

    return tree_map(convert, example)


@contextlib.contextmanager
def address_space_limit(extra_bytes: int) -> Iterator[None]:
    """Within the block, allocations beyond ``extra_bytes`` more address space fail with an error (``RLIMIT_AS``)
    instead of waking the out-of-memory killer; the previous limit is restored after. Does nothing where the
    ``resource`` module or ``/proc`` is missing (not Linux)."""
    try:
        import resource
    except ImportError:  # Windows
        yield
        return
    from ssdaudit.registration.probe_device import proc_bytes

    used = proc_bytes("/proc/self/status", "VmSize")  # the address space this process maps now
    if used is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = used + max(int(extra_bytes), 0)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
