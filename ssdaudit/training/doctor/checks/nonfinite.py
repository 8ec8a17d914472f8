"""F001-F006: where the first NaN/Inf of the run came from, cheaply enough to leave on.

The guard (every step): at ``step()``, the L2 norm of each of the optimizer's gradients in one
``torch._foreach_norm`` on the device (and the value of each functional loss), folded into one flag. On the steps the doctor syncs anyway
(``ctx.due``) the flag is read; between them it accumulates on the device with the first bad step's number, so the
guard adds no host sync of its own. Steps a GradScaler skips never reach ``step()``: their inf gradients are by
design (F005, F006 when it keeps happening).

Kept for a possible replay, per step and replaced at the next: the root forward calls (module, the argument
tensors by reference, the CPU/CUDA RNG state before the call) and the gradients that reached their outputs.

The localisation runs once, at the first non-finite gradient, before the optimizer applies it (the weights are
still those of the step's forward):

1. the saved inputs are checked (F001: which tensor, which rows);
2. each root call is replayed on a deep copy of its module (hooks stripped, the RNG state of that call restored,
   the user's RNG restored after) under ``NonFiniteTracer``, then backward from the saved output gradients: a forward
   producer (F002), a non-finite parameter of the forward (F004 when the previous step's gradients were finite),
   or a backward producer (F003);
3. when the value came from code outside any module (a loss function), the trace is armed on the following steps
   of the live run (non-finite values usually recur) and ``ssdaudit watch`` re-runs the script up to that step
   under the trace. Nothing of the user's training changes: the copy's buffers and gradients are thrown away.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from ssdaudit.core.findings import RULES, Location
from ssdaudit.training.doctor import nonfinite_trace as nt
from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.doctor.ranks import world
from ssdaudit.training.gradflow.sharded import local

MAX_CALLS = 8  # root calls kept per step
ARM_STEPS = 3  # live steps traced after a first sign the replay could not place
KEEPS_SKIPPING = 10  # consecutive GradScaler skips (the scale down 1024x) that are no longer by design

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
               "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks")


@dataclass
class RootCall:
    """One root forward call of a step, as the replay needs it."""

    module: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    rng: tuple[torch.Tensor, torch.Tensor | None, int]  # CPU state, CUDA state, CUDA device (-1: none)
    grads: dict[int, torch.Tensor] = field(default_factory=dict)  # flattened output index -> its gradient


def _unwrap(module: nn.Module) -> nn.Module:
    while True:
        inner = getattr(module, "module", None) if isinstance(
            module, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else getattr(module, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return module
        module = inner


def is_compiled(module: nn.Module | None) -> bool:
    return module is not None and type(module).__name__ == "OptimizedModule"


def _rng(args: Any) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    device = next((t.device for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor) and t.is_cuda), None)
    if device is None:
        return torch.get_rng_state(), None, -1
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.get_rng_state(), torch.cuda.get_rng_state(index), index


def copy_without_hooks(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose modules carry no hooks (the doctor's and the monitor's stay on the original)."""
    memo: dict[int, Any] = {}
    for m in module.modules():
        for attr in _HOOK_DICTS:
            d = m.__dict__.get(attr)
            if d is not None:
                memo[id(d)] = type(d)()
    return copy.deepcopy(module, memo)


def _leaf(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().requires_grad_(x.requires_grad and (x.is_floating_point() or x.is_complex()))
    return x


def _rank() -> str:
    import torch.distributed as dist

    return f"rank {dist.get_rank()}: " if dist.is_available() and dist.is_initialized() else ""


_FIXES = {
    "log": "take log_softmax instead of log(softmax(...)), or log(x.clamp_min(eps))",
    "log2": "clamp the input: log2(x.clamp_min(eps))", "log10": "clamp the input: log10(x.clamp_min(eps))",
    "log1p": "clamp the input above -1",
    "div": "add an eps to the denominator (x / (d + eps)) or clamp it away from 0",
    "exp": "subtract the max before exp (x - x.amax(dim, keepdim=True)), or use softmax/logsumexp",
    "sqrt": "add an eps under the sqrt (torch.sqrt(x + eps)) or clamp its input at 0",
    "rsqrt": "add an eps: torch.rsqrt(x + eps)",
    "pow": "clamp the base (a negative base with a fractional exponent is NaN) or lower the exponent",
    "softmax": "a row whose every entry is masked with -inf: keep one entry unmasked per row or zero those rows "
               "after the softmax (torch.where(all_masked, 0, p))",
    "log_softmax": "a row whose every entry is masked with -inf: keep one entry unmasked per row",
    "scaled_dot_product_attention": "an attention row whose every key is masked: keep one key (itself) unmasked",
    "acos": "clamp the input to [-1 + eps, 1 - eps]", "asin": "clamp the input to [-1 + eps, 1 - eps]",
    "atanh": "clamp the input to (-1, 1)", "norm": "add an eps (F.normalize(x, eps=1e-12))",
    "std": "at least two elements per group (std of one element is NaN), or add an eps",
    "var": "at least two elements per group (var of one element is NaN)",
    "mean": "an empty selection: a mean over no element is NaN", "reciprocal": "add an eps: 1 / (x + eps)",
    "tan": "keep the input away from pi/2", "lgamma": "keep the input positive", "digamma": "keep the input positive",
    "cross_entropy": "every target is ignore_index in this batch (a mean over no element is NaN), or a target "
                     "class whose logit is -inf: check the targets",
    "nll_loss": "every target is ignore_index in this batch, or a target's log-probability is -inf",
    "binary_cross_entropy": "use binary_cross_entropy_with_logits on the logits",
}


_LINEAR = {"linear", "matmul", "mm", "bmm", "addmm", "conv1d", "conv2d", "conv3d", "mul", "add", "sub", "einsum",
           "mse_loss", "pow", "sum", "mean", "layer_norm", "batch_norm", "scaled_dot_product_attention"}


def fix_for(op: str, rec: nt.OpRecord) -> str:
    """The usual fix for ``op``; the divergence hint instead when its inputs were already huge for their dtype (above
    the square root of its largest value, or above 1e6 for products and sums, which overflow from there)."""
    base = op.rstrip("_")
    for s in rec.inputs:
        if s.lo > s.hi:
            continue
        big = max(abs(s.lo), abs(s.hi))
        try:
            top = torch.finfo(getattr(torch, s.dtype)).max
        except (AttributeError, TypeError):
            continue
        if big > math.sqrt(top) or (base in _LINEAR and big > min(1e6, math.sqrt(top))):
            return (f"its inputs were already huge for {s.dtype} (|x| up to {big:.3g}): the values diverged in the "
                    "steps before; lower the learning rate or clip gradients")
    return _FIXES.get(base, "clamp the input of this operation to its valid range, or add an eps")


class FirstNonFinite(Check):
    """F001-F006 (see the module docstring)."""
    code = "F002"
    also = ("F001", "F003", "F004", "F005", "F006")
    module_types = ()  # root calls only: what a replay needs

    def __init__(self) -> None:
        self.calls: list[RootCall] = []
        self.acc: torch.Tensor | None = None  # device: the first step (1-based) with a non-finite gradient, 0: none
        self.clean_through = 0  # the last step whose gradients were read finite (ctx.step numbering, 1-based)
        self.done = False  # the first non-finite value was reported (or could not be)
        self.armed: nt.NonFiniteTracer | None = None
        self.arm_left = 0
        self.first_seen = 0  # the step of the first non-finite gradient
        self.rerun_step = 0  # ssdaudit watch: re-run the script with the trace armed at this step
        self.trace_at = 0  # set by the runner's re-run: arm the trace before this step
        self.skips = 0
        self.consecutive = 0
        self.ok_steps = 0
        self.loss_bad: torch.Tensor | None = None  # device: a functional loss of this step was NaN/Inf
        self.all_ignored: torch.Tensor | None = None  # device: every target of the last loss call is ignore_index
        self.w0: dict[str, float] = {}  # the weight norms before the first step (F004's ratio at step 1)

    # --- lifetime ------------------------------------------------------------------------------------

    def on_attach(self, ctx: Context) -> None:
        if self.trace_at == 1:
            self._arm(ctx, 1)

    def on_detach(self, ctx: Context) -> None:
        if self.armed is not None:
            self.armed.stop()
            self.armed = None
        self.calls = []

    # --- what a replay needs, every step -------------------------------------------------------------

    def on_module_pre(self, ctx: Context, module: nn.Module, args: tuple[Any, ...], root: bool) -> None:
        if not root or self.done or not torch.is_grad_enabled() or len(self.calls) >= MAX_CALLS or nt.replaying():
            return
        call = RootCall(module, args, {}, _rng(args))
        self.calls.append(call)
        handles: list[Any] = []

        def post(_m: nn.Module, _args: Any, kwargs: Any, output: Any) -> None:
            handles[0].remove()
            if kwargs:  # the call's keyword arguments (a global pre-hook does not get them)
                call.kwargs = dict(kwargs)
            for i, t in enumerate(tree_flatten(output)[0]):
                if isinstance(t, torch.Tensor) and t.requires_grad:
                    t.register_hook(lambda g, i=i: call.grads.__setitem__(i, g))  # type: ignore[no-untyped-call]

        # on this call only (removed as it runs): nothing of ours stays on the user's module (torch.save(model)
        # pickles its hooks, copy.deepcopy copies them)
        handles.append(module.register_forward_hook(post, with_kwargs=True))

    # --- the guard -----------------------------------------------------------------------------------

    @torch.no_grad()
    def on_loss(self, ctx: Context, name: str, input: torch.Tensor, target: Any, options: dict[str, Any]) -> None:
        """A batch whose every target is ``ignore_index`` has a NaN mean loss (0/0) and zero gradients: by design
        (T011 is about it), not a first NaN. One small device op, no sync."""
        self.all_ignored = None
        index = options.get("ignore_index")
        if (isinstance(target, torch.Tensor) and not target.is_floating_point() and isinstance(index, int)
                and not self.done and target.numel()):
            self.all_ignored = (target == index).all()

    @torch.no_grad()
    def on_loss_value(self, ctx: Context, name: str, value: torch.Tensor) -> None:
        """A ``torch.nn.functional`` loss's value: a NaN/Inf loss whose gradients stay finite (a fully masked row
        whose gradient the mask zeroes) counts too. One small device op, no sync."""
        if self.done or not value.requires_grad or not value.is_floating_point() or nt.replaying():
            return
        bad = ~torch.isfinite(value.detach()).all()
        if self.all_ignored is not None and self.all_ignored.device == bad.device:
            bad = bad & ~self.all_ignored
        self.loss_bad = bad if self.loss_bad is None or self.loss_bad.device != bad.device else self.loss_bad | bad

    @torch.no_grad()
    def on_step_pre(self, ctx: Context) -> None:
        if self.armed is not None:
            self._disarm(ctx)
        if self.done or ctx.closure_step:
            return
        # local(): a sharded (FSDP2) tensor's own shard on this rank, never a collective of ours
        grads = [g for p in ctx.trained_params() if (g := p.grad) is not None and g.layout == torch.strided]
        if not grads:
            return
        if ctx.sharded:
            grads = [local(g) for g in grads]
        if ctx.step == 0 and not self.w0 and ctx.monitor is not None:  # once: the weights before the first update
            params = [p for p in ctx.params() if id(p) in ctx.trained_ids and p.layout == torch.strided]
            w_norms = (torch.stack([n.float() for n in torch._foreach_norm([local(p) for p in params])]).tolist()
                       if params else [])
            self.w0 = {ctx.name_of(p): n for p, n in zip(params, w_norms)}
        # the L2 norms (the cheapest foreach reduction: 1.2 ms on SSDLite's 4.6M gradients on a CPU, where the
        # inf-norm takes 9 ms): NaN or Inf in a gradient makes its norm non-finite; a finite gradient whose norm
        # overflows (|g| ~ 1e19) is told apart by the inf-norm, on the due step that reports it
        norms = torch.stack(torch._foreach_norm(grads))  # mixed dtypes: promoted
        bad = ~torch.isfinite(norms).all()
        loss_now = self.loss_bad
        if loss_now is not None:
            bad = bad | loss_now.to(bad.device)
            self.loss_bad = None
        if self.acc is None or self.acc.device != bad.device:
            self.acc = torch.zeros((), dtype=torch.long, device=bad.device)
        # a Python scalar, not torch.tensor(step, device=...): no host-to-device copy (a sync on CUDA) per step
        self.acc = torch.where((self.acc == 0) & bad, ctx.current, self.acc)
        if not ctx.due:
            return
        # read with the step's other values (the watch reads them before the update runs: a replay needs the
        # weights of this step)
        loss_flag = (loss_now.to(self.acc.device, torch.long).reshape(()) if loss_now is not None
                     else torch.zeros((), dtype=torch.long, device=self.acc.device))
        ctx.defer(torch.stack([self.acc, loss_flag]), lambda v: self._judge_first(ctx, int(v[0]), bool(v[1]), grads))

    @torch.no_grad()
    def _judge_first(self, ctx: Context, first: int, loss_bad: bool, grads: list[torch.Tensor]) -> None:
        """``first``: the first step whose loss or gradients were non-finite (0: none yet); ``loss_bad``: this step's
        loss was."""
        if first == ctx.current and not loss_bad:
            tops = torch.stack([m.float() for m in torch._foreach_norm(grads, math.inf)])
            if bool(torch.isfinite(tops).all()):  # finite gradients whose L2 norm overflowed: not a NaN
                if self.acc is not None:
                    self.acc.zero_()
                first = 0
        if not first:
            self.clean_through = ctx.current
            return
        self.first_seen = first
        self._localise(ctx, first)

    def on_step_post(self, ctx: Context) -> None:
        self.calls = []
        self.loss_bad = None
        if self.skips or self.consecutive:
            self.ok_steps += 1
            self.consecutive = 0
        if self.trace_at and ctx.current + 1 == self.trace_at and not self.done:
            self._arm(ctx, 1)
        elif self.arm_left and not self.done and self.armed is None:
            self._arm(ctx, self.arm_left)

    # --- localisation --------------------------------------------------------------------------------

    def _localise(self, ctx: Context, first: int) -> None:
        self.done = True
        where = f"{_rank()}{ctx.label}: the first non-finite loss or gradient reached step() {first}"
        if first != ctx.current:
            # seen between two checks (every > 1): that step's inputs are gone; trace the steps that follow
            self._provisional(ctx, first, f"{where} (noticed at step {ctx.current}, checks every {ctx.every} steps)")
            self.arm_left, self.done = ARM_STEPS, False
            self.rerun_step = first
            return
        verdict = self._replay(ctx)
        if verdict.record is not None:
            self._report(ctx, verdict, first)
            return
        if verdict.detail.get("finite") and world()[1] > 1:
            # this rank's forward and backward are finite on its own inputs: the gradients turned non-finite after
            # them, in the gradient all-reduce (DDP) or hand-written averaging: another rank produced them
            ctx.notes.append(f"{where}: this rank's own forward and backward of that step are finite on replay; the "
                             "non-finite gradients came from another rank through the gradient all-reduce (the "
                             "finding of the rank that produced them names the operation)")
            return
        self._provisional(ctx, first, where + (f"; {verdict.detail['why']}" if verdict.detail.get("why") else ""))
        self.rerun_step = first
        if not is_compiled(ctx.model):
            self.arm_left, self.done = ARM_STEPS, False

    def _replay(self, ctx: Context) -> nt.Verdict:
        calls = list(self.calls)
        if not calls:
            return nt.Verdict(None, "", {"why": "no forward of a module was seen in this step"})
        # 1. the inputs
        for k, call in enumerate(calls):
            if ctx.model is not None and _unwrap(call.module) is not ctx.model:
                continue
            leaves = tree_flatten((call.args, call.kwargs))[0]
            for i, t in enumerate(leaves):
                if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and any(nt._status(t)):
                    return self._input_verdict(ctx, call, t, i)
        verdicts: list[tuple[int, nt.Verdict]] = []
        backward = [False]  # a backward was replayed from saved output gradients
        for k, call in enumerate(calls):
            try:
                v = self._replay_call(ctx, call, backward)
            except Exception as exc:  # the copy or the replay failed: say so, never raise
                v = nt.Verdict(None, "", {"why": f"the replay failed ({type(exc).__name__}: {exc})"})
            verdicts.append((k, v))
            if v.phase in ("forward", "input", "parameter"):
                return v
        back = [v for _, v in reversed(verdicts) if v.phase == "backward"]
        if back:
            return back[0]
        loss = [v for _, v in verdicts if v.phase == "loss"]
        if loss:
            return nt.Verdict(None, "loss", {"why": loss[0].detail["why"]})
        why = next((v.detail["why"] for _, v in verdicts if v.detail.get("why")), "")
        if why or not backward[0]:
            return nt.Verdict(None, "", {"why": why or "the replay of the saved forward calls stays finite"})
        # forward and backward replayed, both finite
        return nt.Verdict(None, "", {"why": "the replay of the saved forward calls stays finite", "finite": True})

    def _replay_call(self, ctx: Context, call: RootCall, backward: list[bool]) -> nt.Verdict:
        module = _unwrap(call.module)
        if any(isinstance(m, nn.SyncBatchNorm) for m in module.modules()):
            return nt.Verdict(None, "", {"why": "no replay of a model with SyncBatchNorm (its collectives)"})
        root = _unwrap(ctx.model) if ctx.model is not None else None
        in_model = ctx.model is not None and (module is root or ctx.in_model(module))
        prefix = ctx.name_of(module).removeprefix("_orig_mod.") if in_model and module is not root else ""
        clone = copy_without_hooks(module)
        names: dict[int, str] = {}
        label = prefix or ("" if in_model else type(module).__name__)
        for path, m in clone.named_modules():
            names[id(m)] = ".".join(p for p in (label, path) if p) or (type(module).__name__ if not in_model else
                                                                          type(m).__name__)
        for path, p in clone.named_parameters():
            names[id(p)] = ".".join(x for x in (prefix, path) if x)
        args = tuple(_leaf(a) for a in tree_flatten(call.args)[0])
        args_tree = tree_flatten(call.args)[1].unflatten(list(args))
        kwargs = {k: _leaf(v) if isinstance(v, torch.Tensor) else v for k, v in call.kwargs.items()}
        tracer = nt.NonFiniteTracer(names)
        devices = [call.rng[2]] if call.rng[2] >= 0 else []
        with nt.replay():
            with torch.random.fork_rng(devices=devices), torch.enable_grad():
                torch.set_rng_state(call.rng[0])
                if call.rng[1] is not None:
                    torch.cuda.set_rng_state(call.rng[1], call.rng[2])
                tracer.start()
                try:
                    out = clone(*args_tree, **kwargs)
                    fwd = nt.verdict(tracer)
                    if fwd.record is not None and (tracer.saw_nan() or fwd.phase != "forward"
                                                   or _reaches(out, tracer)):
                        return fwd
                    outs = tree_flatten(out)[0]
                    pairs = [(outs[i], g) for i, g in call.grads.items()
                             if i < len(outs) and isinstance(outs[i], torch.Tensor) and outs[i].requires_grad]
                    if not pairs:
                        return nt.Verdict(None, "")
                    bad = [(i, g) for i, g in call.grads.items() if any(nt._status(g))]
                    if bad:
                        i, g = bad[0]
                        what = f"output {i} of `{label or type(module).__name__}`" if len(outs) > 1 else \
                            f"the output of `{label or type(module).__name__}`"
                        return nt.Verdict(None, "loss", {"why": (
                            f"the forward of `{label or type(module).__name__}` on the saved inputs is finite, and "
                            f"the gradient that reached {what} is already non-finite ({nt.summarise(g)}): it was "
                            "produced in the code after it (the loss)")})
                    torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
                    backward[0] = True
                finally:
                    tracer.stop()
        return nt.verdict(tracer)

    def _input_verdict(self, ctx: Context, call: RootCall, t: torch.Tensor, index: int) -> nt.Verdict:
        with torch.no_grad():
            rows = (~torch.isfinite(t.detach().reshape(t.shape[0], -1) if t.dim() else t.detach().reshape(1, -1))
                    ).any(1).nonzero().flatten().tolist()
        names = [k for k, v in call.kwargs.items() if v is t]
        which = f"keyword `{names[0]}`" if names else f"argument {index}"
        rec = nt.OpRecord(0, "input", "input", ctx.name_of(_unwrap(call.module)), None, (nt.summarise(t),), None,
                          "NaN" if nt._status(t)[0] else "inf")
        return nt.Verdict(rec, "input", {"which": which, "rows": rows})

    # --- live tracing after a first sign -------------------------------------------------------------

    def _arm(self, ctx: Context, steps: int) -> None:
        if nt.replaying():
            return
        names: dict[int, str] = {}
        if ctx.model is not None:
            names = {id(m): p or type(m).__name__ for p, m in ctx.model.named_modules()}
            names.update({id(p): n for n, p in ctx.model.named_parameters()})
        self.armed = nt.NonFiniteTracer(names).start()
        self.arm_left = steps

    def _disarm(self, ctx: Context) -> None:
        tracer, self.armed = self.armed, None
        assert tracer is not None
        tracer.stop()
        self.arm_left -= 1
        v = nt.verdict(tracer)
        if v.record is not None and (v.phase in ("forward", "backward", "parameter")
                                     or v.phase == "input" and v.record.module):
            self.done, self.arm_left = True, 0
            self._report(ctx, v, ctx.current, live=True)
        elif self.arm_left <= 0:
            self.done = True

    # --- findings ------------------------------------------------------------------------------------

    def _provisional(self, ctx: Context, step: int, message: str) -> None:
        how = ("run the step eagerly for the localisation: TORCHDYNAMO_DISABLE=1 python train.py"
               if is_compiled(ctx.model) else
               "`ssdaudit watch -- python train.py` re-runs the script with the trace on that step")
        self._put(ctx, "F002", "<unplaced>", f"{message}; the operation that produced it is not placed yet ({how})",
                  None, step)

    def _report(self, ctx: Context, v: nt.Verdict, step: int, live: bool = False) -> None:
        rec = v.record
        assert rec is not None
        ctx.found.pop(("F002", "<unplaced>"), None)
        rank = _rank()
        if v.phase == "input":
            rows = v.detail.get("rows", [])
            shown = ", ".join(map(str, rows[:8])) + (f" and {len(rows) - 8} more" if len(rows) > 8 else "")
            which = v.detail.get("which", "an input")
            self._put(ctx, "F001", rec.module or "<input>",
                      f"{rank}the input batch of step {step} holds non-finite values before any operation: "
                      f"{which} of `{rec.module}`, {rec.inputs[0]}; rows {shown}: repair or filter those samples",
                      None, step)
            return
        if v.phase == "parameter":
            self._report_update(ctx, rec, step)
            return
        where = f"`{rec.module}`" if rec.module else "the code outside any module (the loss)"
        ins = "; ".join(str(s) for s in rec.inputs) or "no tensor input"
        if v.phase == "backward":
            node = rec.via.op if rec.via is not None else "its backward"
            grads = "; ".join(str(s) for s in rec.via.inputs) if rec.via is not None else ""
            msg = (f"{rank}step {step}: the forward is finite, and the gradient of `{rec.op}` in {where} is the first "
                   f"non-finite one: {node} turned the finite gradient it received ({grads}) into "
                   f"{rec.made} ({rec.output}); the forward inputs of `{rec.op}`: {ins}; "
                   f"fix: {fix_for(rec.op, rec)}" + self._divergence(ctx, fix_for(rec.op, rec)))
            self._put(ctx, "F003", rec.module or "<loss>", msg, rec.location, step)
            return
        via = (f", then `{rec.via.op}` turned it into NaN"
               + (f" at {rec.via.location}" if rec.via.location is not None and rec.via.location != rec.location else "")
               if rec.via is not None else "")
        msg = (f"{rank}step {step}: `{rec.op}` in {where} produced {rec.made} from finite inputs ({ins}) -> "
               f"{rec.output}{via}; fix: {fix_for(rec.op, rec)}{self._divergence(ctx, fix_for(rec.op, rec))}"
               + ((" (found by re-running the script up to this step under the trace)" if self.trace_at else
                   " (found by tracing the steps after the first non-finite gradient)") if live else ""))
        self._put(ctx, "F002", rec.module or "<loss>", msg, rec.location, step)

    def _report_update(self, ctx: Context, rec: nt.OpRecord, step: int) -> None:
        name = rec.inputs[0].name or "a parameter"
        prev = step - 1
        if self.clean_through != prev or prev < 1:
            self._put(ctx, "F002", "<unplaced>",
                      f"{_rank()}step {step}: the forward reads the non-finite parameter `{name}` ({rec.inputs[0]}); "
                      "the step that made it so was not checked", rec.location, step)
            return
        group = next((g for g in ctx.optimizer.param_groups for p in g["params"] if ctx.name_of(p) == name), {})
        lr = float(group.get("lr", float("nan")))
        ratios = self._ratios(ctx, name)
        shown = ", ".join(f"step {s}: {r:.3g}" for s, r in ratios[-4:])
        estimate = self._update_estimate(ctx, name, prev, lr, "betas" in group)
        msg = (f"{_rank()}the update of step {prev} turned `{name}` non-finite ({rec.inputs[0]}) although its gradient "
               f"was finite: learning rate {lr:.3g}" + (f"; {estimate[1]}" if estimate else "")
               + (f"; update-to-weight ratio ||dw||/||w|| of the steps before: {shown}" if shown else "")
               + " (healthy: about 1e-3); fix: lower the learning rate"
               + (f" (about {estimate[0] / 1e-3:.2g}x too high)" if estimate and estimate[0] > 1e-2 else ""))
        self._put(ctx, "F004", name, msg, None, prev)

    def _update_estimate(self, ctx: Context, name: str, step: int, lr: float, adam: bool) -> tuple[float, str] | None:
        """(ratio, text): the update-to-weight ratio of the overflowing step, from the gradient norm the monitor
        recorded at ``step`` and the weight norm before it (the monitor's previous row, or the first step's)."""
        mon = ctx.monitor
        if mon is None:
            return None
        try:
            from ssdaudit.training.gradflow.log import GRAD_NORM, WEIGHT

            run = mon.run()
            col = next(k for k, t in enumerate(run.tensors) if t.name == name)
            rows = {int(s): row for s, row in zip(run.steps, run.stats)}
            g = float(rows[step][GRAD_NORM, col])
            w = float(rows[step - 1][WEIGHT, col]) if step - 1 in rows else self.w0.get(name, float("nan"))
            numel = run.tensors[col].numel
        except Exception:
            return None
        if not (math.isfinite(w) and w > 0 and math.isfinite(g)):
            return None
        if adam:
            ratio = lr * math.sqrt(numel) / w
            return ratio, (f"an Adam-style update moves each of its {numel:,} values by about lr: lr * sqrt(n) / ||w|| "
                           f"= {ratio:.3g} (||w|| {w:.3g} before the step)")
        ratio = lr * g / w
        return ratio, f"update-to-weight ratio lr * ||g|| / ||w|| = {lr:.3g} * {g:.3g} / {w:.3g} = {ratio:.3g} at that step"

    def _divergence(self, ctx: Context, fix: str) -> str:
        """When the fix is the divergence hint: the largest update-to-weight ratio of the recorded steps before."""
        if "diverged" not in fix:
            return ""
        worst = [(r, s, n) for n in self._names(ctx) for s, r in self._ratios(ctx, n)[-1:]]
        if not worst:
            return ""
        r, s, n = max(worst)
        return f" (largest update-to-weight ratio ||dw||/||w|| {r:.3g} at step {s}, `{n}`; healthy: about 1e-3)"

    def _names(self, ctx: Context) -> list[str]:
        mon = ctx.monitor
        return [t.name for t in mon.tensors if t.in_optimizer] if mon is not None else []

    def _ratios(self, ctx: Context, name: str) -> list[tuple[int, float]]:
        """(step, ||update|| / ||weight||) of parameter ``name`` on the steps the gradient-flow monitor recorded."""
        mon = getattr(ctx, "monitor", None)
        if mon is None:
            return []
        try:
            from ssdaudit.training.gradflow.log import UPDATE, WEIGHT

            run = mon.run()
            col = next(k for k, t in enumerate(run.tensors) if t.name == name)
            out = []
            for s, row in zip(run.steps, run.stats):
                u, w = float(row[UPDATE, col]), float(row[WEIGHT, col])
                if math.isfinite(u) and math.isfinite(w) and w > 0:
                    out.append((int(s), u / w))
            return out
        except Exception:
            return []

    def _put(self, ctx: Context, code: str, path: str, message: str, location: Location | None, step: int) -> None:
        key = (code, path)
        if key in ctx.found:
            return
        ctx.found[key] = RULES[code].finding(path, message, location=location, step=step)
        ctx.first_step[code] = min(step, ctx.first_step.get(code, step))

    # --- dynamic loss scaling ------------------------------------------------------------------------

    def on_scaler_skip(self, ctx: Context, scaler: Any) -> None:
        """GradScaler skipped optimizer.step(): inf/NaN in the scaled gradients, by design."""
        if self.armed is not None:
            self._disarm(ctx)
        self.skips += 1
        self.consecutive += 1
        self.calls = []
        self.loss_bad = None
        try:
            scale = float(scaler.get_scale())
        except Exception:
            scale = float("nan")
        if self.ok_steps and self.consecutive == 1:
            self._put(ctx, "F005", "", f"GradScaler skipped step {ctx.current} on inf/NaN gradients and lowered the "
                      f"scale to {scale:g} (by design)", None, ctx.current)
        if self.consecutive >= KEEPS_SKIPPING or (scale < 1.0 and self.consecutive > 1):
            self._put(ctx, "F006", "", f"{_rank()}GradScaler skipped the last {self.consecutive} steps in a row "
                      f"({self.skips} in all, {self.ok_steps} applied); the scale fell to {scale:g}: the gradients "
                      "are non-finite at every scale", None, ctx.current)
            if not self.done and self.armed is None and not self.arm_left:
                self.arm_left = ARM_STEPS
                self._arm(ctx, ARM_STEPS)


def _reaches(out: Any, tracer: nt.NonFiniteTracer) -> bool:
    """Whether a non-finite value of the traced forward reaches an output of the replayed call (an Inf that only a
    deliberate mask consumes does not)."""
    for t in tree_flatten(out)[0]:
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
            rec = tracer._origin(t)
            if rec is not None and not rec.deliberate:
                return True
    return False
