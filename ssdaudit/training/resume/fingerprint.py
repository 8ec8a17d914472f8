"""Per-step fingerprints of a training run: what ``ssdaudit resume`` compares between a run and its resumed copy.

A ``StepPrint`` holds, for one optimizer step: a digest of the batch that reached the model (its first forward of the
step with gradients enabled), the loss (the tensor ``backward`` was called on, unscaled when a ``GradScaler`` scaled
it), the learning rate of every param group (read before the step), the gradients' digest and L2 norm and the
parameters' digests (read after the step), the GradScaler's scale, and digests of the RNG states (torch, CUDA, NumPy,
``random``) at that first forward.

Digests are CRC-32 of the tensors' bytes (exact: one changed bit changes them), taken on the host without drawing
from any RNG and without changing any tensor; CUDA tensors are reduced on the device (an int64 sum of their 32-bit
words, read once at the end of the run) so that a step costs no extra host sync.
"""

from __future__ import annotations

import random
import struct
import sys
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

RANDOM_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def tensor_digest(t: torch.Tensor, seed: int = 0) -> int:
    """CRC-32 of ``t``'s values (its dtype and shape included), chained from ``seed``. CPU only; see ``digests``."""
    t = t.detach()
    head = f"{t.dtype}{tuple(t.shape)}".encode()
    seed = zlib.crc32(head, seed)
    if t.numel() == 0:
        return seed
    flat = t.reshape(-1)
    if not flat.is_contiguous():
        flat = flat.contiguous()
    if flat.dtype is torch.bool:
        flat = flat.to(torch.uint8)
    data = flat.view(torch.uint8) if flat.element_size() > 1 or flat.dtype is not torch.uint8 else flat
    return zlib.crc32(data.numpy().data, seed)  # contiguous uint8: its buffer, not a copy


def _device_digest(t: torch.Tensor) -> torch.Tensor:
    """A 0-dim int64 tensor on ``t``'s device: the sum of its 32-bit words, position-weighted (exact, no sync)."""
    flat = t.detach().reshape(-1).contiguous().view(torch.uint8)
    pad = (-flat.numel()) % 4
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    words = flat.view(torch.int32).to(torch.int64)
    weights = torch.arange(1, words.numel() + 1, device=words.device, dtype=torch.int64) % 65521
    return (words * weights).sum()


def digest_all(tensors: Iterable[Any]) -> int | torch.Tensor:
    """One digest of a sequence of tensors (``None`` entries count as a marker): an int for CPU tensors, a device
    tensor when any is on an accelerator (read later with ``resolve``)."""
    seed = 0
    device: list[torch.Tensor] = []
    for t in tensors:
        if t is None:
            seed = zlib.crc32(b"none", seed)
        elif t.device.type == "cpu":
            seed = tensor_digest(t, seed)
        else:
            device.append(_device_digest(t))
    if device:
        return torch.stack(device).sum() + seed
    return seed


def batch_digest(value: Any, seed: int = 0, depth: int = 0) -> int | torch.Tensor:
    """The digest of every tensor in a batch (tuples, lists, dicts by sorted key), nested up to 4 levels."""
    tensors: list[Any] = []

    def walk(v: Any, d: int) -> None:
        if isinstance(v, torch.Tensor):
            tensors.append(v)
        elif d < 4 and isinstance(v, (list, tuple)):
            for x in v:
                walk(x, d + 1)
        elif d < 4 and isinstance(v, dict):
            for k in sorted(v, key=str):
                walk(v[k], d + 1)

    walk(value, depth)
    return digest_all(tensors) if tensors else seed


def rng_digests() -> dict[str, int]:
    """Digests of the RNG states: torch (CPU), cuda (when initialised), numpy (when imported), random. Reading a
    state draws nothing."""
    out = {"torch": tensor_digest(torch.get_rng_state())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        out["cuda"] = zlib.crc32(b"".join(bytes(s.numpy()) for s in torch.cuda.get_rng_state_all()))
    np = sys.modules.get("numpy")
    if np is not None:
        state = np.random.get_state()
        out["numpy"] = zlib.crc32(memoryview(state[1]).cast("B"), int(state[2]))
    version, internal, gauss = random.getstate()
    tail = struct.pack("d", gauss) if isinstance(gauss, float) else b"-"
    out["random"] = zlib.crc32(struct.pack(f"{len(internal)}q", *internal) + tail, version)
    return out


@dataclass
class StepPrint:
    """The fingerprint of one optimizer step (see the module's docstring). ``step``: 1-based, this run's count."""

    step: int
    batch: int | None = None
    loss: float | None = None
    lrs: list[float] = field(default_factory=list)
    grad: int | None = None
    grad_norm: float | None = None
    params: list[int] = field(default_factory=list)
    scale: float | None = None
    rng: dict[str, int] = field(default_factory=dict)
    loader: int | None = None  # which DataLoader (numbered as first iterated) gave the last batch before the step


@dataclass
class LoaderStart:
    """A ``DataLoader`` iterator was created (an epoch's data order drawn) after ``step`` optimizer steps."""

    step: int
    loader: int
    rng: dict[str, int]
    global_shuffle: bool  # a RandomSampler without a generator of its own: the order is drawn from torch's RNG
    sampler: str
    sampler_epoch: int | None


@dataclass
class RunPrints:
    """The fingerprints of one run (one optimizer): its steps, the state before its first step, where the data
    order was drawn, and the model's RNG-driven layers in training mode."""

    steps: list[StepPrint] = field(default_factory=list)
    param_names: list[str] = field(default_factory=list)
    start_params: list[int] = field(default_factory=list)
    start_state: dict[str, int] = field(default_factory=dict)  # optimizer state key -> tensors holding it
    start_step_count: float | None = None
    loaders: list[LoaderStart] = field(default_factory=list)
    random_layers: list[str] = field(default_factory=list)
    optimizer: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunPrints":
        out = cls(**{k: v for k, v in d.items() if k not in ("steps", "loaders")})
        out.steps = [StepPrint(**s) for s in d.get("steps", [])]
        out.loaders = [LoaderStart(**x) for x in d.get("loaders", [])]
        return out


def optimizer_state_summary(opt: torch.optim.Optimizer) -> tuple[dict[str, int], float | None]:
    """(state key -> how many parameters hold a tensor under it, the largest ``step`` count), without a sync on
    CPU (a CUDA ``step`` tensor is read: once per run)."""
    counts: dict[str, int] = {}
    step: float | None = None
    for state in opt.state.values():
        for k, v in state.items():
            if k == "step":
                step = max(step or 0.0, float(v))
            elif isinstance(v, torch.Tensor):
                counts[k] = counts.get(k, 0) + 1
    return counts, step


def named_params(model: nn.Module | None, opt: torch.optim.Optimizer) -> tuple[list[str], list[torch.Tensor]]:
    """The optimizer's parameters in its order, and their names in ``model`` (``group0.3`` where unknown)."""
    names = {id(p): n for n, p in model.named_parameters()} if model is not None else {}
    out_names, params = [], []
    for gi, g in enumerate(opt.param_groups):
        for pi, p in enumerate(g["params"]):
            out_names.append(names.get(id(p), f"group{gi}.{pi}"))
            params.append(p)
    return out_names, params


def param_digests(params: list[torch.Tensor]) -> list[int]:
    return [int(x) if isinstance(x, int) else int(x.item()) for x in (digest_all([p]) for p in params)]


def grad_norm(params: list[torch.Tensor]) -> float | None:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    norms = torch._foreach_norm([g.detach() for g in grads])
    return float(torch.linalg.vector_norm(torch.stack([n.float() for n in norms])))
