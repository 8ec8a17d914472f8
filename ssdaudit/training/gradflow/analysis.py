"""Findings G001-G006 and the per-layer table of a gradient-flow run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ssdaudit.core.report import failing_findings
from ssdaudit.core.findings import RULES, Finding, Severity
from ssdaudit.training.gradflow.log import GRAD_L1, GRAD_MAX, GRAD_NORM, LR, UPDATE, WEIGHT, GradFlowRun, TrackedTensor

if TYPE_CHECKING:
    from ssdaudit.training.gradflow.trace import ForwardTrace

# --- analysis ---------------------------------------------------------------------------------------


def _group(tensors: list[TrackedTensor]) -> dict[str, list[TrackedTensor]]:
    groups: dict[str, list[TrackedTensor]] = {}
    for t in tensors:
        top = t.name.split(".", 1)[0]
        groups.setdefault(top, []).append(t)
    return groups


def _examples(tensors: list[TrackedTensor], n: int = 3) -> str:
    shown = ", ".join(f"{t.name} {tuple(t.shape)}" for t in tensors[:n])
    return shown + (f", ... ({len(tensors) - n} more)" if len(tensors) > n else "")


def coverage_findings(tensors: list[TrackedTensor], stale: list[dict[str, Any]], has_optimizer: bool,
                      loss_guessed: bool = False, forward: "ForwardTrace | None" = None) -> list[Finding]:
    """G001 orphan gradients, G002 parameters no gradient reaches, G003 optimizer coverage (both directions).

    ``forward``: the probe's evidence of which modules ran and where the graph was cut; G002 is then judged by it
    (``_g002_by_evidence``): a parameter whose module ran but got no gradient is an error whatever the loss, one
    whose module never ran a warning. Without it (a user's own loop, a log read back) an unreached parameter is an
    error, or a note when ``loss_guessed`` (the loss was the default guess, the sum of the outputs' means: a
    parameter only the real criterion reaches would look unreached)."""
    def finding(code: str, path: str, ts: list[TrackedTensor], what: str, listing: str,
                severity: Severity | None = None) -> Finding:
        params = sum(t.numel for t in ts)
        return RULES[code].finding(path, f"{len(ts)} {what.format(params=params)}: {listing}", params=params,
                                   members={t.name: t.shape for t in ts}, severity=severity)

    guess = (" (from the default loss, the sum of the outputs' means: a guess; if the real criterion reaches them, "
             "define compute_loss(output) in the model file and rerun)") if loss_guessed else ""

    out = [
        finding("G001", top, ts, "tensors ({params:,} parameters) get gradients but are not registered parameters: "
                "an optimizer built from model.parameters() never applies them", _examples(ts))
        for top, ts in _group([t for t in tensors if not t.registered]).items()
    ]
    if forward is not None:
        out += _g002_by_evidence(tensors, forward, loss_guessed, has_optimizer)
    else:
        out += [
            finding("G002", layer, ts, "trainable parameters ({params:,} values) receive no gradient from the loss" + guess,
                    ", ".join(t.name for t in ts), Severity.INFO if loss_guessed else None)
            for layer, ts in _by_layer([t for t in tensors if t.registered and not t.reached]).items()
        ]
    if has_optimizer:
        out += [
            finding("G003", top, ts, "parameters ({params:,} values) get gradients but are in no optimizer param_group",
                    _examples(ts))
            for top, ts in _group([t for t in tensors if t.registered and t.reached and not t.in_optimizer]).items()
        ]
        if stale:
            params = sum(s["numel"] for s in stale)
            where = ", ".join(f"param_groups[{s['group']}][{s['index']}] {tuple(s['shape'])}" for s in stale[:3])
            out.append(RULES["G003"].finding("",
                f"the optimizer holds {len(stale)} tensors ({params:,} values) that are not parameters of the model "
                f"(stale optimizer, built before the model was rebuilt or moved?): {where}",
                params=params, subject="optimizer",
            ))
    return out


def _g002_by_evidence(tensors: list[TrackedTensor], forward: "ForwardTrace", loss_guessed: bool,
                      has_optimizer: bool) -> list[Finding]:
    """G002 from what the probe saw. A trainable parameter whose module ran in forward (or in the loss) but got no
    gradient: an error with any loss, since no function of the outputs can reach it; the cut is named when it was
    seen (a tensor made from another's data, a module run under no_grad or returning outputs without a grad_fn).
    One whose module never ran: a warning (unused in this forward; DDP without find_unused_parameters fails on it),
    whose message says how to pass the real loss when the loss may call it. A ran parameter in no optimizer (a
    copy kept without gradients, an EMA teacher with requires_grad left on) is a warning too. Parameters are grouped
    under the outermost module all of whose trainable parameters share the verdict (``backbone``, not each conv)."""
    unreached = [t for t in tensors if t.registered and not t.reached]
    if not unreached:
        return []

    upstream = set().union(*(c.upstream for c in forward.cuts)) if forward.cuts else set()

    def verdict(t: TrackedTensor) -> str:
        # its module ran, or it fed a tensor that was cut (F.linear(x, self.fc.weight).detach(): fc never called)
        if _module_of(t) not in forward.ran and t.name not in upstream:
            return "unused"
        return "cut" if t.in_optimizer or not has_optimizer else "cut-no-optimizer"

    verdicts = {t.name: verdict(t) for t in unreached}
    trainable = [t for t in tensors if t.registered]
    groups: dict[tuple[str, str], list[TrackedTensor]] = {}
    for t in unreached:
        groups.setdefault((_outermost(t, trainable, verdicts), verdicts[t.name]), []).append(t)
    out = []
    for (path, kind), ts in groups.items():
        params = sum(t.numel for t in ts)
        listing = ", ".join(t.name for t in ts[:6]) + (f", ... ({len(ts) - 6} more)" if len(ts) > 6 else "")
        label = f"`{path}`"
        if kind == "unused":
            if loss_guessed:
                how = ("if the training loss calls it (a decoder run inside the criterion), define compute_loss(output) "
                       "in the model file to pass the real loss, and rerun")
            elif forward.returned_scalar:
                how = ("forward returns the loss; if the training loss adds a term that calls it, define "
                       "compute_loss(output) in the model file to pass that loss, and rerun")
            else:
                how = "compute_loss does not call it either"
            message = (f"{len(ts)} trainable parameters ({params:,} values) receive no gradient: forward never calls "
                       f"{label} (unused here; DDP without find_unused_parameters=True fails on it); {how}: {listing}")
            out.append(RULES["G002"].finding(path, message, params=params, members={t.name: t.shape for t in ts},
                                             severity=Severity.WARNING))
            continue
        cut = forward.cut_for({t.name for t in ts}, _module_of(ts[0]))
        where = f"the graph is cut at {cut}" if cut else "where the graph is cut was not seen"
        message = (f"{len(ts)} trainable parameters ({params:,} values) ran in forward but receive no gradient, so no "
                   f"loss can reach them; {where}: {listing}")
        severity = None
        if kind == "cut-no-optimizer":
            message += (" (in no optimizer either: if it is a copy updated without gradients, an EMA or teacher, "
                        "set requires_grad_(False) on it)")
            severity = Severity.WARNING
        out.append(RULES["G002"].finding(path, message, params=params, members={t.name: t.shape for t in ts},
                                         severity=severity))
    return out


def _module_of(t: TrackedTensor) -> str:
    """The path of the module that owns ``t`` ("" for the model's own parameters)."""
    return t.name.rsplit(".", 1)[0] if "." in t.name else ""


def _outermost(t: TrackedTensor, trainable: list[TrackedTensor], verdicts: dict[str, str]) -> str:
    """The outermost submodule containing ``t`` all of whose trainable parameters have ``t``'s verdict (``t``'s
    layer when none does; the model itself is never the answer: its parameters are listed by their layer)."""
    parts = _module_of(t).split(".") if _module_of(t) else []
    for k in range(1, len(parts) + 1):
        prefix = ".".join(parts[:k])
        under = [u for u in trainable if u.name.startswith(prefix + ".")]
        if under and all(verdicts.get(u.name) == verdicts[t.name] for u in under):
            return prefix
    return t.layer


def _by_layer(tensors: list[TrackedTensor]) -> dict[str, list[TrackedTensor]]:
    layers: dict[str, list[TrackedTensor]] = {}
    for t in tensors:
        layers.setdefault(t.layer, []).append(t)
    return layers


@dataclass
class LayerStats:
    path: str
    params: int
    registered: bool
    reached: bool
    grad_norm_mean: float  # mean over recorded steps of the layer's gradient L2 norm
    grad_max_mean: float  # mean over steps of max |g|
    grad_mean_abs: float  # mean over steps of mean |g|
    update_ratio_mean: float  # mean over steps of ||delta w|| / ||w||
    grad_norm_steps: np.ndarray  # (S,)
    update_ratio_steps: np.ndarray  # (S,)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "params": self.params, "registered": self.registered, "reached": self.reached,
                "grad_norm_mean": self.grad_norm_mean, "grad_max_mean": self.grad_max_mean,
                "grad_mean_abs": self.grad_mean_abs, "update_ratio_mean": self.update_ratio_mean}


def layer_stats(run: GradFlowRun) -> list[LayerStats]:
    """Per layer (a module's parameters together), per recorded step: norms combine as sqrt of sums of squares."""
    idx: dict[str, list[int]] = {}
    for k, t in enumerate(run.tensors):
        idx.setdefault(t.layer, []).append(k)
    out = []
    s = run.stats.astype(np.float64)
    for layer, ks in idx.items():
        ts = [run.tensors[k] for k in ks]
        numel = sum(t.numel for t in ts)
        if len(s):
            norm = np.sqrt((s[:, GRAD_NORM, ks] ** 2).sum(axis=1))
            gmax = s[:, GRAD_MAX, ks].max(axis=1)
            mean_abs = s[:, GRAD_L1, ks].sum(axis=1) / max(numel, 1)
            upd = np.sqrt((s[:, UPDATE, ks] ** 2).sum(axis=1))
            w = np.sqrt((s[:, WEIGHT, ks] ** 2).sum(axis=1))
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN/inf statistics: G006's
                ratio = np.where(w > 0, upd / np.where(w > 0, w, 1), 0.0)
        else:
            norm = gmax = mean_abs = ratio = np.zeros(0)
        out.append(LayerStats(
            layer, numel, all(t.registered for t in ts), any(t.reached for t in ts),
            _mean(norm), _mean(gmax), _mean(mean_abs), _mean(ratio), norm, ratio,
        ))
    return out


def _growth(norms: np.ndarray, window: int, min_steps: int) -> tuple[float, float, float] | None:
    """(late, early, k): the mean of the last k finite norms (a quarter of them, at most ``window``) and the median
    of the first half; None with fewer than ``min_steps`` finite norms or no positive early value."""
    finite = norms[np.isfinite(norms)]
    if len(finite) < max(min_steps, 2):
        return None
    early = float(np.median(finite[: len(finite) // 2]))
    k = max(1, min(window, len(finite) // 4))
    late = float(finite[-k:].mean())
    return (late, early, float(k)) if early > 0 else None


def _mean(a: np.ndarray) -> float:
    finite = a[np.isfinite(a)]
    return float(finite.mean()) if finite.size else 0.0


def _waking(norms: np.ndarray) -> bool:
    """Whether a layer's gradient norms (per recorded step) were exactly 0, then positive and rising: its gradient
    passes through a multiplicative parameter initialised to zero (a residual branch's last BatchNorm weight, zero-init
    LayerScale or ReZero gate) that training is opening. Small is expected there, and is no vanishing gradient: a
    gradient that vanishes through depth is tiny from the first step on, not exactly zero, and does not grow."""
    finite = norms[np.isfinite(norms)]
    zero = np.nonzero(finite == 0)[0]
    if not zero.size or zero[0] == len(finite) - 1:
        return False
    after = finite[zero[0] + 1:]
    return bool(np.all(after > 0) and after[-1] > after[0]) if len(after) > 1 else bool(after[0] > 0)


def _update_was_due(rows: np.ndarray, dtype: str) -> bool:
    """Whether a zero update is news: the lr was 0 on every step (a frozen group), unknown (an old log), or on a step
    with a positive lr ``lr * max|g|`` exceeded the weight's rounding step (``eps(dtype) * ||w||``). Otherwise tiny
    gradients merely rounded to nothing in the weight's precision (fp32 here; for fp16/bf16 weights without master
    copies that is T014's bug), and a warm-up's lr-0 steps change nothing by design.  ``rows``: (steps, fields)."""
    lr = rows[:, LR]
    if np.any(np.isnan(lr)) or np.all(lr == 0):
        return True
    try:
        eps = float(torch.finfo(getattr(torch, dtype)).eps)
    except (AttributeError, TypeError):
        eps = float(np.finfo(np.float32).eps)
    live = lr > 0  # a warm-up's lr-0 steps change nothing by design: judge the steps that had a learning rate
    return bool(np.any(lr[live] * rows[live, GRAD_MAX] > eps * rows[live, WEIGHT]))


def analyse_gradflow(
    run: GradFlowRun, min_steps: int = 2, window: int = 20, vanish: float = 1e-4, explode: float = 1e2,
    explode_min_steps: int = 4,
) -> tuple[list[Finding], list[LayerStats]]:
    """Findings G001-G006 and the per-layer table of a run.

    G004 needs ``min_steps`` recorded optimizer steps and an update that was due (see ``_update_was_due``). G005
    "vanishing" compares each layer's mean gradient norm over the last ``window`` recorded steps with the median
    layer's (below ``vanish`` x median), except a layer whose gradient was exactly 0 and has been rising since (gated by
    a zero-initialised scale, see ``_waking``). G005 "exploding" compares each layer with its own history, never with other
    layers (a layer-scale parameter of 1e-6 makes most layers' gradients tiny, so ordinary ones would look huge):
    the mean norm over the last quarter of the run (at most ``window`` steps) above ``explode`` x the median over
    its first half, given at least ``explode_min_steps`` recorded steps, and above the range the network started in
    (the largest first-half median of any layer): a gradient gated by a tiny scale (LayerScale 1e-6) grows 1000x as
    training opens the gate, from far below the other layers up to their range, and that is no explosion. Per-tensor scale factors cancel out.
    """
    findings = coverage_findings(run.tensors, run.stale_optimizer, run.has_optimizer, run.loss_guessed, run.forward)
    layers = layer_stats(run)
    s = run.stats
    if run.has_optimizer and len(s) >= min_steps:
        # Rows with a weight norm recorded are those where an optimizer step followed.
        stepped = s[:, WEIGHT, :].max(axis=1) > 0 if s.shape[2] else np.zeros(len(s), bool)
        if stepped.sum() >= min_steps:
            frozen = [
                t for k, t in enumerate(run.tensors)
                if t.in_optimizer and t.reached and np.all(s[stepped, UPDATE, k] == 0) and np.any(s[stepped, GRAD_NORM, k] > 0)
                and _update_was_due(s[stepped][:, :, k], t.dtype)
            ]
            for layer, ts in _by_layer(frozen).items():
                params = sum(t.numel for t in ts)
                findings.append(RULES["G004"].finding(layer,
                    f"{len(ts)} parameters ({params:,} values) get gradients and sit in the optimizer but did not change "
                    f"in {int(stepped.sum())} steps (lr 0 in their param_group? a bad group?): {', '.join(t.name for t in ts)}",
                    params=params,
                ))
    if len(s):
        recent = [(ls, _mean(ls.grad_norm_steps[-window:])) for ls in layers
                  if ls.reached and not _waking(ls.grad_norm_steps[-window:])]
        positive = [v for _, v in recent if v > 0]
        if len(positive) >= 3:
            median = float(np.median(positive))
            for ls, v in recent:
                if 0 < v < vanish * median:
                    findings.append(RULES["G005"].finding(ls.path,
                        f"vanishing gradient: mean norm {v:.3g} over the last {min(window, len(s))} recorded steps, "
                        f"{v / median:.2g}x the median layer's {median:.3g}",
                        params=ls.params, facts={"kind": "vanishing", "ratio": v / median},
                    ))
        growths = {ls.path: _growth(ls.grad_norm_steps, window, explode_min_steps) for ls in layers if ls.reached}
        # the largest early (first-half median) norm of any layer: the range the network's gradients started in
        start_range = max((g[1] for g in growths.values() if g is not None), default=0.0)
        for ls in layers:
            growth = growths.get(ls.path)
            if growth is not None and growth[0] > explode * growth[1] and growth[0] > start_range:
                late, early, k = growth
                # the first recorded step whose norm left the range (above explode x the early median, or not finite)
                above = np.nonzero(~(ls.grad_norm_steps <= explode * early))[0]
                facts = {"kind": "exploding", "ratio": late / early,
                         **({"row": int(run.steps[above[0]])} if above.size else {})}
                findings.append(RULES["G005"].finding(ls.path,
                    f"exploding gradient: mean norm {late:.3g} over the last {int(k)} recorded steps, {late / early:.2g}x "
                    f"its own median {early:.3g} over the first half of the run",
                    params=ls.params, facts=facts,
                ))
        bad = ~np.isfinite(s[:, GRAD_NORM, :])
        if bad.any():
            row = int(np.argmax(bad.any(axis=1)))
            ks = np.nonzero(bad[row])[0]
            # Backward runs from the loss towards the input, so the bad tensor nearest the output is the likely source.
            first = run.tensors[int(ks[-1])]
            findings.append(RULES["G006"].finding(first.name,
                f"gradient became NaN/Inf at step {int(run.steps[row])} in {len(ks)} tensors; nearest the output: {first.name}"
                + ("" if run.every == 1 else f" (recorded every {run.every} steps)"),
                params=first.numel, facts={"row": int(run.steps[row])},
            ))
    return findings, layers




@dataclass
class GradflowReport:
    """What ``ssdaudit gradflow`` reports: the run, its findings and per-layer table, the plots written."""

    target: str
    run: GradFlowRun
    findings: list[Finding]
    layers: list[LayerStats]
    plots: list[Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "steps": int(len(self.run.steps)),
            "findings": [f.to_dict() for f in self.findings],
            "layers": [ls.to_dict() for ls in self.layers],
            "plots": [str(p) for p in self.plots],
            "warnings": self.run.warnings,
        }

    def exit_code(self, strict: bool = False) -> int:
        """1 on an error finding (G001-G004, G006), warnings too when ``strict``."""
        return 1 if failing_findings(self.findings, strict) else 0
