"""The comparison of ``ssdaudit resume``: the uninterrupted run's fingerprints against the resumed run's, aligned
step by step (the resumed run's step i is the first run's step ``saved + i``), and the cause of the first step where
they differ, read from which fingerprint differs first:

* the weights before the first resumed step differ: the checkpoint's weights did not load (S002);
* the batch differs: found elsewhere in the first run, the run replays or skips steps (S007: a counter off) or starts
  its epoch over (S001: the position in the epoch); found nowhere, the order differs (S001), or is drawn from a torch
  RNG that was not restored (S003);
* the same batch and weights give another loss: RNG-driven layers (dropout) draw other numbers (S003);
* the learning rate differs (S004); the GradScaler's scale differs (S006);
* the same gradients make another update: the optimizer's state (S005).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ssdaudit.core.findings import RULES, Finding, Location
from ssdaudit.training.resume.fingerprint import LoaderStart, RunPrints, StepPrint


Make = Callable[[str, str, int], Finding]  # (rule code, message, resumed step) -> the finding


@dataclass(frozen=True)
class Divergence:
    """The first differing step (the resumed run's count, and the first run's) and the fingerprints that differ."""

    step: int
    run1_step: int
    fields: tuple[str, ...]


def _fields(a: StepPrint, b: StepPrint) -> tuple[str, ...]:
    out = []
    for name in ("batch", "loss", "lrs", "scale", "grad", "params"):
        if getattr(a, name) != getattr(b, name):
            out.append(name)
    return tuple(out)


def _names(names: Sequence[str], a: Sequence[int], b: Sequence[int]) -> list[str]:
    return [n for n, x, y in zip(names, a, b) if x != y]


def _listed(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _epoch_starts(prints: RunPrints, loader: int | None) -> list[LoaderStart]:
    return [s for s in prints.loaders if loader is None or s.loader == loader]


def _start_before(prints: RunPrints, step: int, loader: int | None) -> LoaderStart | None:
    """The last time the loader started an epoch with at most ``step`` optimizer steps done."""
    found = None
    for s in _epoch_starts(prints, loader):
        if s.step <= step:
            found = s
    return found


def diagnose(run1: RunPrints, run2: RunPrints, saved: int, location: Location | None = None,
             opt_state: dict[str, int] | None = None, opt_step: float | None = None, run1_ended: bool = False
             ) -> tuple[Divergence | None, list[Finding]]:
    """(the first divergence or None, the findings naming its cause). ``saved``: the first run's optimizer steps
    when the checkpoint was saved; ``location``: the script's line that saved it; ``opt_state``/``opt_step``: the
    first run's optimizer state then (state key -> tensors holding it, its step count); ``run1_ended``: the first
    run ended by itself (the script finished) before the steps asked for, so its length is the run's own: a resumed
    run that goes on past it trains steps it had already done."""
    def finding(code: str, message: str, step: int) -> Finding:
        return RULES[code].finding("", message, location=location, subject=f"step {step}")

    r1, r2 = run1.steps, run2.steps
    names = run1.param_names or run2.param_names
    if saved >= 1 and len(r1) >= saved and r2 and run2.start_params and r1[saved - 1].params != run2.start_params:
        differ = _names(names, r1[saved - 1].params, run2.start_params)
        div = Divergence(1, saved + 1, ("params",))
        return div, [finding("S002", f"the resumed run starts from other weights than the checkpointed run held after "
                                     f"step {saved}: {len(differ)} of {len(names)} parameters differ ({_listed(differ)}) "
                                     "before its first step: the checkpoint's weights were not loaded", 1)]
    for i, b in enumerate(r2):
        j = saved + i
        if j >= len(r1):
            break
        a = r1[j]
        fields = _fields(a, b)
        if not fields:
            continue
        div = Divergence(i + 1, j + 1, fields)
        return div, [_cause(div, a, b, run1, run2, saved, opt_state, opt_step, finding)]
    left = len(r1) - saved
    if run1_ended and left >= 0 and len(r2) > left:
        div = Divergence(left + 1, len(r1) + 1, ("steps",))
        return div, [finding("S007", f"the resumed run goes on past the end of the uninterrupted run: it ran {len(r2)} "
                                     f"steps where the uninterrupted run had {left} left after step {saved} (it ended "
                                     f"at step {len(r1)}): it trains again what it had already done, an epoch or step "
                                     "counter restarted instead of continuing from the checkpoint's", left + 1)]
    return None, []


def _cause(div: Divergence, a: StepPrint, b: StepPrint, run1: RunPrints, run2: RunPrints, saved: int,
           opt_state: dict[str, int] | None, opt_step: float | None, make: Make) -> Finding:
    i, j = div.step, div.run1_step
    at = f"at resumed step {i} (step {j} of the uninterrupted run)"
    if "batch" in div.fields:
        return _batch_cause(div, a, b, run1, run2, saved, make, at)
    if "loss" in div.fields:
        torch_rng = a.rng.get("torch") != b.rng.get("torch")
        layers = run1.random_layers or run2.random_layers
        if layers and torch_rng:
            return make("S003", f"the same batch and weights give another loss {at} ({a.loss!r} against {b.loss!r}): "
                        f"the RNG-driven layers {_listed(layers)} draw other numbers because the torch RNG state was "
                        "not restored", i)
        if torch_rng:
            return make("S003", f"the same batch and weights give another loss {at} ({a.loss!r} against {b.loss!r}) "
                        "and the torch RNG state differs: random numbers drawn in the forward (noise, random "
                        "augmentation) differ because the RNG state was not restored", i)
        return make("S002", f"the same batch and weights give another loss {at} ({a.loss!r} against {b.loss!r}) with "
                    "the same RNG state: state outside the loaded parameters (buffers or Python attributes of the "
                    "model) was not restored", i)
    if "lrs" in div.fields:
        return make("S004", f"the learning rate differs {at}: {_lr(a.lrs)} in the uninterrupted run, {_lr(b.lrs)} "
                    "resumed: the scheduler's state (its step count, last_epoch) was not restored", i)
    if "scale" in div.fields:
        return make("S006", f"the GradScaler's scale differs {at}: {a.scale:g} in the uninterrupted run, {b.scale:g} "
                    "resumed: its state was not restored", i)
    if "grad" in div.fields:
        if a.rng.get("torch") != b.rng.get("torch"):
            return make("S003", f"the same batch and loss give other gradients {at}: random numbers drawn in the "
                        "forward or backward differ because the torch RNG state was not restored", i)
        return make("S002", f"the same batch and loss give other gradients {at}: state outside the loaded "
                    "parameters was not restored", i)
    held = ", ".join(f"{k} of {n} tensors" for k, n in sorted((opt_state or {}).items())) or "no tensor state"
    now = ", ".join(f"{k} of {n} tensors" for k, n in sorted(run2.start_state.items())) or "none"
    counts = ""
    if opt_step is not None or run2.start_step_count is not None:
        counts = f"; its step count was {opt_step if opt_step is None else int(opt_step)}, resumed {run2.start_step_count if run2.start_step_count is None else int(run2.start_step_count)}"
    return make("S005", f"the same gradients make another update {at}: the optimizer's state was not restored "
                f"({run1.optimizer} held {held} when the checkpoint was saved; the resumed run started with {now}"
                f"{counts})", i)


def _lr(lrs: list[float]) -> str:
    uniq = sorted(set(lrs))
    return f"{uniq[0]:.6g}" if len(uniq) == 1 else "[" + ", ".join(f"{x:.6g}" for x in lrs) + "]"


def _batch_cause(div: Divergence, a: StepPrint, b: StepPrint, run1: RunPrints, run2: RunPrints, saved: int,
                 f: Make, at: str) -> Finding:
    i, j = div.step, div.run1_step
    matches = [s.step for s in run1.steps if s.batch == b.batch and s.batch is not None]
    loader = a.loader
    s1 = _start_before(run1, j - 1, loader)
    s2 = _start_before(run2, i - 1, b.loader)
    if (s1 is not None and s2 is not None and s2.global_shuffle and s1.step == saved
            and s1.rng.get("torch") != s2.rng.get("torch")):
        again = " (it repeats the order of an earlier epoch)" if matches else ""
        return f("S003", f"the resumed run trains on another batch {at}: the epoch's shuffle is drawn from the global "
                 "torch RNG (a shuffled DataLoader without a generator of its own), whose state the checkpoint did "
                 f"not restore{again}", i)
    if matches:
        k = min(matches, key=lambda s: abs(s - j))
        d = k - j
        what = f"replays {-d} step{'s' if -d != 1 else ''}" if d < 0 else f"skips {d} step{'s' if d != 1 else ''}"
        starts = [s.step for s in _epoch_starts(run1, loader)]
        lengths = [y - x for x, y in zip(starts, starts[1:])]
        at_boundary = saved in starts
        epoch_start = max((s for s in starts if s < j), default=None)
        if at_boundary and lengths and abs(d) in lengths:
            return f("S007", f"the resumed run {what} {at}: its first batch is batch {k} of the uninterrupted run, one "
                     f"epoch ({abs(d)} steps) {'back' if d < 0 else 'ahead'}: the epoch counter was restored off by one", i)
        if not at_boundary and epoch_start is not None and k == epoch_start + 1 and d < 0:
            return f("S001", f"the resumed run starts its epoch over {at}: its first batch is the epoch's first batch "
                     f"(step {k} of the uninterrupted run), so it replays {-d} batches: the position in the epoch "
                     "(the DataLoader position) was not restored", i)
        return f("S007", f"the resumed run {what} {at}: its batch is the uninterrupted run's batch of step {k}: a "
                 f"step or epoch counter was restored off by {abs(d)}", i)
    detail = "the data order was not restored"
    code = "S001"
    if s1 is not None and s2 is not None:
        if s1.sampler_epoch != s2.sampler_epoch:
            detail = (f"the sampler's epoch differs ({s1.sampler_epoch} against {s2.sampler_epoch}): "
                      "sampler.set_epoch(epoch) was not called with the restored epoch")
        elif s1.step < saved:
            detail = ("the checkpoint was saved mid-epoch and the resumed run draws a new order: the shuffle "
                      "generator and the position in the epoch were not restored")
        else:
            detail = "the shuffle generator (or the sampler's state) was not restored"
    return f(code, f"the resumed run trains on another batch {at}, one the uninterrupted run never saw: {detail}", i)
