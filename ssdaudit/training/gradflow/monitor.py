"""GradFlowMonitor: where gradients go during training, and where they never arrive.

``GradFlowMonitor(model, optimizer)`` hooks a training loop (no change to the loop itself):

* the model's outputs get a gradient hook; when backward reaches them, the autograd graph is walked once
  (``grad_fn`` -> ``next_functions`` -> ``AccumulateGrad.variable``) to find every leaf tensor that receives a
  gradient, and a callback is queued to run when backward has finished;
* after each backward (every ``every`` steps) per-tensor gradient L2 norm, max |g| and L1 norm are computed in
  bulk with ``torch._foreach_norm`` and kept on the device, so no host sync happens per parameter;
* around ``optimizer.step()`` (step pre/post hooks) the update-to-weight ratio ||w' - w|| / ||w'||;
* rows are written in chunks (``chunk_000000.npz`` + ``index.json``, each written atomically) to ``log_dir``.

Sharded models (FSDP2 ``fully_shard``, DTensor parameters) are followed on every rank: gathered copies are mapped
back to the parameters they stand for, and statistics are the full tensors' (combined across ranks, ``sharded``).

``analyse_gradflow(run)`` turns a log (live or read back with ``read_gradflow_log``) into findings G001-G006.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from ssdaudit.core.io import atomic_write, atomic_write_text
from ssdaudit.core.patches import compile_disabled
from ssdaudit.core.findings import Finding
from ssdaudit.training.gradflow.analysis import analyse_gradflow, coverage_findings
from ssdaudit.training.gradflow.log import (
    RowSink,
    GRAD_L1, GRAD_MAX, GRAD_NORM, LOG_VERSION, LR, N_FIELDS, STAT_FIELDS, UNREGISTERED, UPDATE, WEIGHT, GradFlowRun,
    TrackedTensor, assemble_run,
)
from ssdaudit.training.gradflow.sharded import ShardReducer, is_dtensor, unsharded_to_sharded


def unwrap_compiled(module: Any) -> Any:
    """The module ``torch.compile(module)`` wraps (its ``OptimizedModule``'s ``_orig_mod``), else ``module``."""
    while type(module).__name__ == "OptimizedModule" and isinstance(getattr(module, "_orig_mod", None), nn.Module):
        module = module._orig_mod
    return module


def _wrapped(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel and ``torch.compile`` (hooks and names belong there:
    no ``module.`` or ``_orig_mod.`` in paths)."""
    model = unwrap_compiled(model)
    inner = getattr(model, "module", None)
    if isinstance(inner, nn.Module) and isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = inner
    unwrapped: nn.Module = unwrap_compiled(model)
    return unwrapped


def _is_writer() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _has_gradient(p: torch.Tensor) -> bool:
    """``p.grad`` holds a nonzero value (checked once, at the first backward: a host sync per parameter)."""
    g = p.grad
    if g is None or is_dtensor(p):
        return False
    if g.layout is not torch.strided:
        return g._nnz() > 0 if g.layout is torch.sparse_coo else True
    return bool(g.count_nonzero().item())


class GradFlowMonitor:
    """Follow gradients and updates in any training loop.

    Use as a context manager (``with GradFlowMonitor(model, opt, log_dir="run/gradflow") as mon: ...``) or with
    ``attach()``/``detach()``. ``findings()`` analyses what has been seen so far; ``on_findings`` (if given) is
    called once, right after the first backward, with the coverage findings (G001-G003), so that a run that is
    about to fail (DDP's unused-parameter error on the next forward) has said why first.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        every: int = 1,
        log_dir: str | Path | None = None,
        chunk_steps: int = 100,
        on_findings: Callable[[list[Finding]], None] | None = None,
        sinks: Sequence[RowSink] = (),
    ) -> None:
        if every < 1:
            raise ValueError("every must be >= 1")
        self.model = _wrapped(model)
        self.optimizer = optimizer
        self.every = every
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.chunk_steps = chunk_steps
        self.on_findings = on_findings
        self.sinks = list(sinks)  # more writers of the rows (TensorBoard: integrations.tensorboard.TensorBoardSink)
        self.step = 0
        self.tensors: list[TrackedTensor] = []
        self._objs: list[torch.Tensor] = []  # the tracked tensors, in self.tensors' order
        self._stale: list[dict[str, Any]] = []
        self._stale_tensors: list[torch.Tensor] = []
        self._roots: list[Any] = []  # grad_fn of the outputs seen in the current backward
        self._inputs: list[torch.Tensor] = []  # the forward's inputs, held until discovery (their ids stay unique)
        self._queued = False
        self._handles: list[Any] = []
        self._rows: list[torch.Tensor] = []  # (5, P) per recorded step, on the tensors' device
        self._row_steps: list[int] = []
        self._pending_row: torch.Tensor | None = None
        self._snapshot: list[torch.Tensor] | None = None
        self._snap_buffer: list[torch.Tensor] | None = None
        self._opt_index: list[int] = []  # positions in self._objs of tensors the optimizer holds
        self._opt_groups = torch.zeros(0, dtype=torch.long)  # their param_group, aligned with _opt_index
        self._opt_index_dev: torch.Tensor | None = None
        self._chunks_written = 0
        self._history: list[tuple[np.ndarray, np.ndarray]] = []  # flushed (steps, stats)
        self._writer = _is_writer()
        self._reducer: ShardReducer | None = None  # combines shard statistics across ranks (sharded models only)
        self._sharded: bool | None = None  # whether the model has DTensor parameters (looked up on first backward)
        self._attached = False

    # --- hooks ---------------------------------------------------------------------------------------

    def attach(self, forward_hooks: bool = True) -> "GradFlowMonitor":
        """Start recording. ``forward_hooks=False``: no hook on the model itself; the caller passes each forward
        call of ``model`` to ``forward_pre``/``forward_post`` (the training doctor does, from its global hooks, so
        that nothing of ours sits on the user's module: ``torch.save(model)`` pickles a module's hooks and
        ``copy.deepcopy`` copies them)."""
        if self._handles or self._attached:
            return self
        self._attached = True
        # every hook runs outside torch.compile (a compiled model or step calls it eagerly, at a graph break)
        if forward_hooks:
            self._handles.append(self.model.register_forward_pre_hook(compile_disabled(self._on_forward_pre)))
            self._handles.append(self.model.register_forward_hook(compile_disabled(self._on_forward)))
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_pre_hook(compile_disabled(self._on_step_pre)))
            self._handles.append(self.optimizer.register_step_post_hook(compile_disabled(self._on_step_post)))
        return self

    def detach(self) -> None:
        self._attached = False
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.flush()
        if self.sinks and self._writer:
            findings = self.findings()
            for sink in self.sinks:
                sink.close(findings, self.step)

    def __enter__(self) -> "GradFlowMonitor":
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def forward_pre(self, module: nn.Module, args: Any) -> None:
        """A forward call of ``model`` begins (for ``attach(forward_hooks=False)``)."""
        if self._attached:
            self._on_forward_pre(module, args)

    def forward_post(self, module: nn.Module, args: Any, output: Any) -> None:
        """That call returned ``output`` (for ``attach(forward_hooks=False)``)."""
        if self._attached:
            self._on_forward(module, args, output)

    def _on_forward_pre(self, _module: nn.Module, args: Any) -> None:
        if not self.tensors:
            self._inputs = [t for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor)]

    def _on_forward(self, _module: nn.Module, _args: Any, output: Any) -> None:
        if not torch.is_grad_enabled():
            return
        for t in tree_flatten(output)[0]:
            if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                t.register_hook(compile_disabled(self._make_output_hook(t.grad_fn)))  # type: ignore[no-untyped-call]

    def observe(self, output: Any) -> None:
        """Follow gradients from ``output`` too (a loss, or outputs computed without calling the model itself): for
        training frameworks whose steps call submodules directly."""
        self._on_forward(self.model, (), output)

    def _make_output_hook(self, grad_fn: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        def hook(grad: torch.Tensor) -> torch.Tensor:
            self._roots.append(grad_fn)
            if not self._queued:
                self._queued = True
                torch.autograd.Variable._execution_engine.queue_callback(compile_disabled(self._after_backward))
            return grad

        return hook

    def _after_backward(self) -> None:
        self._queued = False
        roots, self._roots = self._roots, []
        if self._sharded is None:
            self._sharded = any(is_dtensor(p) for p in self.model.parameters())
        if self._sharded:
            # FSDP2 finishes its gradient reduce-scatter in its own end-of-backward callback, queued before this
            # one: a callback queued now runs after it, when the sharded gradients are final.
            torch.autograd.Variable._execution_engine.queue_callback(lambda: self._finish_backward(roots))
        else:
            self._finish_backward(roots)

    def _finish_backward(self, roots: list[Any]) -> None:
        if not self.tensors:
            self._discover(roots)
            if self.on_findings is not None:
                self.on_findings(self.coverage_findings())
            self._write_index()
        elif self._stale and self.step < 8:
            # a second backward before the first step (two losses, accumulation) may reach what the first did not
            keep = [k for k, p in enumerate(self._stale_tensors) if not _has_gradient(p)]
            self._stale = [self._stale[k] for k in keep]
            self._stale_tensors = [self._stale_tensors[k] for k in keep]
        self.step += 1
        if (self.step - 1) % self.every == 0:
            self._record_grads()

    # --- the first backward: who gets gradients ----------------------------------------------------

    def _discover(self, roots: list[Any]) -> None:
        from ssdaudit.registration.walk import unregistered_tensor_names

        leaves = autograd_leaves(roots)
        gathered, exact = self._gathered_copies(leaves)  # FSDP2: id(unsharded leaf) -> the sharded parameter
        if exact:
            reached = {id(gathered[i]) if i in gathered else i for i in leaves}
        else:  # without FSDP2's own map, a sharded parameter is reached when it received a gradient
            reached = set(leaves) | {id(p) for p in self.model.parameters() if is_dtensor(p) and p.grad is not None}
        # a parameter the loss itself uses (a decoder run inside the criterion) is no leaf of the outputs' graph, but
        # it holds a gradient now (a nonzero one: a buffer zeroed with set_to_none=False does not count)
        reached |= {id(p) for p in self.model.parameters() if id(p) not in reached and _has_gradient(p)}
        inputs = {id(t) for t in self._inputs}
        self._inputs = []
        opt_ids: dict[int, tuple[int, int, torch.Tensor]] = {}
        if self.optimizer is not None:
            for gi, group in enumerate(self.optimizer.param_groups):
                for pi, p in enumerate(group["params"]):
                    opt_ids.setdefault(id(p), (gi, pi, p))
        registered: dict[int, tuple[str, torch.Tensor]] = {}
        for name, p in self.model.named_parameters():  # a compiled submodule's path without its `_orig_mod.` step
            registered.setdefault(id(p), (".".join(x for x in name.split(".") if x != "_orig_mod"), p))
        names = unregistered_tensor_names(self.model)
        for name, p in registered.values():
            if p.requires_grad:
                self._track(name, p, True, id(p) in opt_ids, id(p) in reached)
        n_unnamed = 0
        order = {i: k for k, i in enumerate(names)}  # attribute-walk order: model order, not graph order
        orphans = sorted((i for i in leaves if i not in registered and i not in inputs and i not in gathered),
                         key=lambda i: order.get(i, len(order)))
        for i in orphans:
            t = leaves[i]
            found = names.get(i)
            if found is None:
                found, n_unnamed = f"{UNREGISTERED}.{n_unnamed}", n_unnamed + 1
            name = found
            self._track(name, t, False, i in opt_ids, True)
        tracked = {id(t) for t in self._objs}
        # stale: in the optimizer, not in the model, and no gradient either. One optimizer over the model and another
        # module (an encoder and its decoder, a model and its loss's parameters) holds tensors the backward reached:
        # trained alongside, not stale
        candidates = [(gi, pi, p) for i, (gi, pi, p) in opt_ids.items()
                      if i not in tracked and i not in registered and not _has_gradient(p)]
        self._stale_tensors = [p for _, _, p in candidates]  # rechecked after later backward passes of the step
        self._stale = [{"group": gi, "index": pi, "shape": list(p.shape), "numel": p.numel()} for gi, pi, p in candidates]
        self._opt_index = [k for k, t in enumerate(self.tensors) if t.in_optimizer]
        self._opt_groups = torch.tensor([opt_ids[id(self._objs[k])][0] for k in self._opt_index], dtype=torch.long)
        if self._sharded:
            self._reducer = ShardReducer(self._objs)

    def _gathered_copies(self, leaves: dict[int, torch.Tensor]) -> tuple[dict[int, torch.Tensor], bool]:
        """Leaves that are FSDP2's gathered (unsharded) copies of registered sharded parameters, by id; and
        whether the map is FSDP2's own (exact) rather than guessed from shapes."""
        if not self._sharded:
            return {}, True
        found = unsharded_to_sharded(self.model)
        if found:
            return {i: found[i] for i in leaves if i in found}, True
        # FSDP2's state laid out differently in this torch: a gathered copy is a leaf with the full shape and
        # dtype of a sharded parameter (an orphan of exactly that shape and dtype is missed here, not invented).
        shapes: dict[tuple[Any, ...], torch.Tensor] = {}
        for p in self.model.parameters():
            if is_dtensor(p):
                shapes.setdefault((tuple(p.shape), p.dtype), p)
        guessed = {i: shapes[(tuple(t.shape), t.dtype)] for i, t in leaves.items() if (tuple(t.shape), t.dtype) in shapes}
        return guessed, False

    def _track(self, name: str, t: torch.Tensor, registered: bool, in_opt: bool, reached: bool) -> None:
        dtype = str(t.dtype).removeprefix("torch.")
        self.tensors.append(TrackedTensor(name, tuple(t.shape), t.numel(), registered, in_opt, reached, dtype))
        self._objs.append(t)

    # --- per-step statistics -------------------------------------------------------------------------

    @torch.no_grad()
    def _record_grads(self) -> None:
        if len(self._rows) >= self.chunk_steps:
            self.flush()
        device = self._objs[0].device if self._objs else torch.device("cpu")
        row = torch.zeros(N_FIELDS, len(self._objs), device=device)
        row[LR] = float("nan")
        self._grad_stats(row)
        self._rows.append(row)
        self._row_steps.append(self.step)
        self._pending_row = row

    @torch.no_grad()
    def refresh_grads(self) -> None:
        """Re-read the gradients of the row the next ``step()`` completes: what the optimizer sees, once something
        changed them after backward (``clip_grad_norm_``, ``GradScaler.unscale_``). Called by the training doctor."""
        row = self._pending_row
        if row is not None:
            row[[GRAD_NORM, GRAD_MAX, GRAD_L1]] = 0.0
            self._grad_stats(row)

    def pending_step(self) -> int | None:
        """The backward count (the log's step) of the row the running ``optimizer.step()`` completes, or None when
        this step's gradients were not recorded. Read from a step post-hook registered before the monitor's."""
        if self._pending_row is None or not self._rows or self._rows[-1] is not self._pending_row:
            return None
        return self._row_steps[-1]

    def _grad_stats(self, row: torch.Tensor) -> None:
        """Gradient L2 norm, max |g| and L1 norm of every tracked tensor into ``row`` (fields x tensors)."""
        views = {k: self._view(k, t.grad) for k, t in enumerate(self._objs) if t.grad is not None}
        present = [k for k, g in views.items() if g.numel() > 0]
        device = row.device
        # Dense real gradients: three bulk kernels over all of them, nothing leaves the device. Other layouts
        # (sparse COO/CSR from nn.Embedding(sparse=True), complex) have no foreach kernels: one tensor at a time.
        bulk = [k for k in present if _bulk_ok(views[k])]
        if bulk:
            grads = [views[k].to(device) for k in bulk]
            idx = torch.tensor(bulk, device=device)
            row[GRAD_NORM, idx] = torch.stack(torch._foreach_norm(grads)).float()
            # max |g| as foreach abs + max: about 3x faster on CPU than _foreach_norm(grads, inf)
            row[GRAD_MAX, idx] = torch.stack(torch._foreach_max(torch._foreach_abs(grads))).float()
            row[GRAD_L1, idx] = torch.stack(torch._foreach_norm(grads, 1)).float()
        for k in present:
            if not _bulk_ok(views[k]):
                row[GRAD_NORM:GRAD_L1 + 1, k] = _one_grad_stats(views[k]).to(device)
        if self._reducer is not None:
            self._reducer.combine(row, sum_sq=(GRAD_NORM,), sums=(GRAD_L1,), maxes=(GRAD_MAX,))

    @torch.no_grad()
    def _on_step_pre(self, _opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        if self._pending_row is not None and self._opt_index and self.optimizer is not None:
            params = self._opt_params()
            if self._snap_buffer is None:  # one reused copy of the weights: no allocation per step
                self._snap_buffer = [torch.empty_like(p) for p in params]
            torch._foreach_copy_(self._snap_buffer, params)
            self._snapshot = self._snap_buffer
            # each tracked tensor's learning rate this step: G004 tells a frozen tensor from an update below rounding
            group_lr = torch.tensor([float(g.get("lr", float("nan"))) for g in self.optimizer.param_groups])
            row = self._pending_row
            row[LR, self._opt_index_on(row.device)] = group_lr[self._opt_groups].to(row.device, non_blocking=True)

    @torch.no_grad()
    def _on_step_post(self, _opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        row, snap, self._pending_row, self._snapshot = self._pending_row, self._snapshot, None, None
        if row is None or snap is None:
            return
        params = self._opt_params()
        torch._foreach_sub_(snap, params)
        idx = self._opt_index_on(row.device)
        row[UPDATE, idx] = torch.stack(torch._foreach_norm(snap)).float()
        row[WEIGHT, idx] = torch.stack(torch._foreach_norm(params)).float()
        if self._reducer is not None:
            self._reducer.combine(row, sum_sq=(UPDATE, WEIGHT), sums=(), maxes=())

    def _view(self, column: int, t: torch.Tensor) -> torch.Tensor:
        """The tensor statistics are computed on: ``t``, or its local shard on a sharded model."""
        return self._reducer.view(column, t) if self._reducer is not None else t

    def _opt_params(self) -> list[torch.Tensor]:
        return [self._view(k, self._objs[k]) for k in self._opt_index]

    def _opt_index_on(self, device: torch.device) -> torch.Tensor:
        """``_opt_index`` as an index tensor on ``device``, made once."""
        if self._opt_index_dev is None or self._opt_index_dev.device != device:
            self._opt_index_dev = torch.tensor(self._opt_index, device=device)
        return self._opt_index_dev

    # --- the log -----------------------------------------------------------------------------------

    def flush(self) -> None:
        """Move recorded rows to the host; write them as one chunk when logging."""
        if not self._rows:
            return
        stats = torch.stack(self._rows).cpu().numpy().astype(np.float32)
        steps = np.asarray(self._row_steps, dtype=np.int64)
        self._rows, self._row_steps = [], []
        self._history.append((steps, stats))
        if self._writer:
            for sink in self.sinks:
                sink.write_rows(self.tensors, steps, stats)
        if self.log_dir is not None and self._writer:
            buf = io.BytesIO()
            np.savez(buf, steps=steps, stats=stats)
            atomic_write(self.log_dir / f"chunk_{self._chunks_written:06d}.npz", lambda f: f.write(buf.getvalue()))
            self._chunks_written += 1
            self._write_index()

    def _write_index(self) -> None:
        if self.log_dir is None or not self._writer:
            return
        index = {
            "version": LOG_VERSION,
            "every": self.every,
            "fields": list(STAT_FIELDS),
            "has_optimizer": self.optimizer is not None,
            "steps_seen": self.step,
            "tensors": [t.to_dict() for t in self.tensors],
            "stale_optimizer": self._stale,
            "coverage_findings": [f.to_dict() for f in self.coverage_findings()],
        }
        atomic_write_text(self.log_dir / "index.json", json.dumps(index, indent=1))

    def run(self) -> GradFlowRun:
        """What has been recorded so far (pending rows included)."""
        history = list(self._history)
        if self._rows:
            history.append((np.asarray(self._row_steps), torch.stack(self._rows).cpu().numpy().astype(np.float32)))
        return assemble_run(self.tensors, self._stale, history, self.every, self.optimizer is not None)

    def coverage_findings(self) -> list[Finding]:
        return coverage_findings(self.tensors, self._stale, self.optimizer is not None)

    def findings(self, **thresholds: Any) -> list[Finding]:
        """Findings G001-G006 of what has been recorded so far (``thresholds``: see ``analyse_gradflow``)."""
        return analyse_gradflow(self.run(), **thresholds)[0]

    def drop_unapplied_grads(self) -> None:
        """Clear gradients of followed tensors the optimizer does not hold: its zero_grad() never reaches them,
        so they would pile up across steps."""
        for t, obj in zip(self.tensors, self._objs):
            if not t.in_optimizer and obj.grad is not None:
                obj.grad = None

    def summary_line(self) -> str:
        """One line for a live display: orphans, dead tensors, the smallest update ratio."""
        orphans = [t for t in self.tensors if not t.registered]
        dead = [t for t in self.tensors if t.registered and not t.reached]
        parts = [f"step {self.step}"]
        parts.append(f"{len(orphans)} orphan ({sum(t.numel for t in orphans):,} params)" if orphans else "no orphans")
        parts.append(f"{len(dead)} without gradient" if dead else "all reached")
        return "gradflow: " + ", ".join(parts)


def autograd_leaves(roots: list[Any]) -> dict[int, torch.Tensor]:
    """Every leaf tensor (``AccumulateGrad.variable``) reachable from the autograd nodes ``roots``, by id.

    Visited nodes are kept in a dict by id *with the node object as the value*: the Python wrappers of autograd
    nodes are made on access and freed when dropped, so an id alone can be handed to the next wrapper and a whole
    subgraph would be skipped (as happened on CUDA). Holding each visited wrapper keeps its id unique for the walk.
    """
    leaves: dict[int, torch.Tensor] = {}
    seen: dict[int, Any] = {}
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        var = getattr(node, "variable", None)
        if isinstance(var, torch.Tensor):
            leaves.setdefault(id(var), var)
        stack.extend(fn for fn, _ in getattr(node, "next_functions", ()))
    return leaves


def _bulk_ok(g: torch.Tensor) -> bool:
    """A gradient the foreach kernels take: dense (strided) and real."""
    return g.layout == torch.strided and not g.is_complex()


def _one_grad_stats(g: torch.Tensor) -> torch.Tensor:
    """(L2 norm, max |g|, L1 norm) of one gradient of any layout, as float32 [3]: a sparse gradient's statistics
    are those of its stored values (the rest are zeros), a complex one's of its magnitudes."""
    if g.layout != torch.strided:
        g = g.coalesce().values() if g.layout == torch.sparse_coo else g.values()
    mags = g.abs().float().flatten()
    if mags.numel() == 0:
        return torch.zeros(3)
    return torch.stack([torch.linalg.vector_norm(mags), mags.max(), mags.sum()])
