"""R007: the save-reload round trip, checked on the symptom itself.

Two models are built with different seeds (A and B). A runs one train-mode forward (lazily created state comes
into being), its ``state_dict()`` travels through an in-memory ``torch.save``/``torch.load(weights_only=True)`` into
B with ``strict=True``, and both run the same input in eval mode. Any state that did not travel (modules in a
plain list, a Python float drawn at random, a NumPy table, a non-persistent buffer that was learned, a key a
``state_dict`` override drops, a buffer created in the first forward) makes the outputs differ; the first module,
in execution order, whose output differs is named, with the kind of state that most likely stayed behind.

The resume case: before the save, A's trainable parameters take a small seeded step (a stand-in for training), and
after the reload A and B each run one more train-mode forward on the same batch with the same RNG. Outputs and
``state_dict()`` afterwards must agree; when they do not, the Python attributes that differed before that step (an
``initialized`` flag guarding a data-dependent initialisation, a step counter switching a schedule) are named.
Modules of A and B are matched by path and class by name (module and qualified name): a build function that
re-imports its library makes B's layers instances of other class objects with the same names, and they are the same
layers.

The round trip never passes by default: when it cannot run (a build, the save, the load or a forward raises) or
cannot compare a module, ``RoundTrip.error`` / ``RoundTrip.not_compared`` say what and why, and
``roundtrip_findings`` reports it as an N004 note instead of a clean result.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import io
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from ssdaudit.core.forward_call import call_forward
from ssdaudit.core.errors import UserError, first_line
from ssdaudit.core.findings import RULES, Finding, Severity, rules_tagged
from ssdaudit.registration.move_probe import first_sample
from ssdaudit.registration.walk import unregistered_module_names

_CONTAINER_RULES = rules_tagged("container")


@dataclass
class RoundTrip:
    """What the round trip saw: whether outputs match, the first differing module, strict-load problems.

    ``equal`` is True only when the comparison ran and found no difference; when it could not run, ``equal`` is False
    and ``error`` says why."""

    equal: bool
    first_differing: str | None = None  # qualified name of the first module whose output differs
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    lazy_keys: list[str] = field(default_factory=list)  # keys that exist only after a forward
    max_abs_diff: float = 0.0
    outside: list[str] = field(default_factory=list)  # state of the differing module that did not travel
    error: str | None = None  # why the check could not run
    # the resume case: one more train-mode forward of A and of the reloaded B (same batch, same RNG) disagrees
    resume_differs: bool = False
    resume_attrs: list[str] = field(default_factory=list)  # "path: A's value vs B's", Python state before that step
    resume_keys: list[str] = field(default_factory=list)  # state_dict() keys whose values differ after that step
    resume_output_diff: float = 0.0
    # what could not be compared and why ("`0.flow`: A's is Foo, B's is Bar", "the resume check: forward in train
    # mode raised ..."): never counted as equal
    not_compared: list[str] = field(default_factory=list)


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _forward(model: nn.Module, example_input: Any) -> Any:
    return call_forward(model, example_input)


def _clone_input(example_input: Any) -> Any:
    return copy.deepcopy(example_input)


def _outputs(out: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def _differ(a: list[torch.Tensor], b: list[torch.Tensor], atol: float) -> float | None:
    """max |a - b| over matching tensors, or None when equal (bitwise when ``atol`` is 0)."""
    if len(a) != len(b):
        return float("inf")
    worst = 0.0
    for x, y in zip(a, b):
        if x.shape != y.shape or x.dtype != y.dtype:
            return float("inf")
        if atol == 0.0 and torch.equal(x, y):
            continue
        if x.is_floating_point() or x.is_complex():
            diff = (x.double() - y.double()).abs()
            d = float(diff.nan_to_num(float("inf")).max()) if diff.numel() else 0.0
        else:
            d = 0.0 if torch.equal(x, y) else float("inf")
        if d > atol or (atol == 0.0 and d > 0):
            worst = max(worst, d)
    return worst or None


class _Recorder:
    """Outputs of every module call in execution order, by qualified name (unregistered members by the name they
    would get once registered)."""

    def __init__(self, model: nn.Module) -> None:
        self.names = {id(m): n for n, m in model.named_modules()}
        self.names.update({i: n for i, n in unregistered_module_names(model).items() if i not in self.names})
        self.calls: list[tuple[str, list[torch.Tensor]]] = []
        self._handle: Any = None

    def __enter__(self) -> "_Recorder":
        names = self.names

        def hook(module: nn.Module, _args: Any, output: Any) -> None:
            name = names.get(id(module))
            if name is not None:  # modules outside the model (built in forward) have no stable name: skipped
                self.calls.append((name, [t.detach().clone() for t in _outputs(output)]))

        self._handle = nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


def run_roundtrip(build: Callable[[], nn.Module], example_input: Any, atol: float = 0.0) -> RoundTrip:
    """Build A and B with different seeds, reload A's state_dict into B, compare eval-mode outputs (then the resume
    case, see ``_resume``). ``atol``: the largest absolute output difference that still counts as equal.

    Raises only ``UserError`` (the time limit, a refusal of ours); anything else that stops the round trip (a build,
    the save, the load or a forward raising) is returned as ``RoundTrip(equal=False, error=...)``, never as equal."""
    state = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
    try:
        _seeded(1234)
        a = build()
        _seeded(4321)
        b = build()
        fresh_keys = set(b.state_dict())
        a.train()
        try:
            with torch.no_grad():
                _forward(a, _clone_input(example_input))  # lazily created state comes into being
        except UserError:
            raise
        except Exception:  # batch 1 with BatchNorm in train mode, ...: the eval pass below still runs
            pass
        _training_step(a)  # the checkpoint holds trained weights, not what the first forward made
        buf = io.BytesIO()
        torch.save(a.state_dict(), buf)
        buf.seek(0)
        saved = torch.load(buf, weights_only=True)
        result = RoundTrip(equal=True)
        try:
            b.load_state_dict(saved, strict=True)
        except RuntimeError:
            own = set(b.state_dict())
            result.missing_keys = sorted(own - set(saved))
            result.unexpected_keys = sorted(set(saved) - own)
            result.lazy_keys = sorted(k for k in result.unexpected_keys if k not in fresh_keys)
            b.load_state_dict({k: v for k, v in saved.items() if k in own}, strict=False)
        a.eval()
        b.eval()
        x = first_sample(example_input)  # eval mode takes one sample: half the work at batch 2

        def outputs(model: nn.Module, recorder: "_Recorder | None" = None) -> list[torch.Tensor]:
            with torch.no_grad(), (recorder or contextlib.nullcontext()):
                _seeded(7)
                return _outputs(_forward(model, _clone_input(x)))

        diff = _differ(outputs(a), outputs(b), atol)
        result.equal = diff is None and not result.missing_keys and not result.unexpected_keys
        result.max_abs_diff = diff or 0.0
        if diff is not None:  # only now: record every module's output, to name the first that differs
            rec_a, rec_b = _Recorder(a), _Recorder(b)
            outputs(a, rec_a)
            outputs(b, rec_b)
            seen: collections.Counter[str] = collections.Counter()
            calls_b: dict[tuple[str, int], list[torch.Tensor]] = {}
            for name, outs in rec_b.calls:
                calls_b[(name, seen[name])] = outs
                seen[name] += 1
            seen.clear()
            for name, outs in rec_a.calls:
                key = (name, seen[name])
                seen[name] += 1
                if key in calls_b and _differ(outs, calls_b[key], atol) is not None:
                    result.first_differing = name
                    # the state that stayed behind lives in that module or in one whose forward feeds it
                    parts = name.split(".") if name else []
                    for k in range(len(parts), -1, -1):
                        result.outside += _state_outside_tensors(a, b, ".".join(parts[:k]))
                    break
        if result.equal:
            _resume(a, b, example_input, atol, result)
        return result
    except UserError:
        raise
    except Exception as exc:
        return RoundTrip(equal=False, error=f"{exc.__class__.__name__}: {first_line(exc, 200)}")
    finally:
        torch.random.set_rng_state(state[0])
        np.random.set_state(state[1])
        random.setstate(state[2])


def _training_step(model: nn.Module) -> None:
    """A stand-in for one optimizer step: every trainable floating parameter moves by a small seeded amount (1% of
    its mean magnitude), so state a forward would rebuild from data differs from what a checkpoint holds."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.is_floating_point() and p.numel() and not p.is_meta:
                noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
                p.add_(noise * (0.01 * float(p.detach().abs().mean()) + 1e-3))


def _resume(a: nn.Module, b: nn.Module, example_input: Any, atol: float, result: RoundTrip) -> None:
    """The resume case: A (trained one forward, then saved) and B (A's state loaded) each run one more train-mode
    forward on the same batch with the same RNG; outputs and state_dict() afterwards must agree. Python state
    that gates behaviour (an ``initialized`` flag, a step counter) does not travel in the checkpoint: it is named
    with both values as they were before that step. A forward that fails in train mode is recorded in
    ``result.not_compared`` (what the check could not see), never taken as agreement."""
    before = _python_state_diff(a, b, result.not_compared)
    if not before:  # all of A's state travelled: the same forward on the same state cannot differ, skip the passes
        return
    a.train()
    b.train()
    outs = []
    try:
        for model in (a, b):
            with torch.no_grad():
                _seeded(11)
                outs.append(_outputs(_forward(model, _clone_input(example_input))))
    except UserError:
        raise
    except Exception as exc:
        result.not_compared.append(
            f"the resume check (one more train-mode forward after the reload) could not run: {exc.__class__.__name__}: "
            f"{first_line(exc, 160)}; Python state that differs: {', '.join(before[:3])}")
        return
    diff = _differ(outs[0], outs[1], atol)
    sb = b.state_dict()
    keys = [k for k, v in a.state_dict().items()
            if k in sb and isinstance(v, torch.Tensor) and _differ([v], [sb[k]], atol) is not None]
    if diff is None and not keys:
        return
    result.resume_differs = True
    result.resume_output_diff = diff or 0.0
    result.resume_keys = keys
    result.resume_attrs = before


_ATOMS = (bool, int, float, str, type(None))


def same_class(a: type, b: type) -> bool:
    """The same class, or the same class imported again (same module and qualified name, another class object: a
    build function that re-imports its library, ``importlib.reload``)."""
    return a is b or (a.__module__ == b.__module__ and a.__qualname__ == b.__qualname__)


def _python_state_diff(a: nn.Module, b: nn.Module, not_compared: list[str] | None = None) -> list[str]:
    """Plain Python values (bools, numbers, strings, None, tuples of them) and non-persistent buffers of every
    module that differ between A and B, as "path.attr: A's vs B's", private names included (``_initialized``),
    nn.Module's own bookkeeping not. Modules are matched by path and by class name (``same_class``). Empty: all
    state that could gate behaviour travelled, or could not be compared: a module B lacks or whose class differs
    is added to ``not_compared`` with the reason."""
    from ssdaudit.registration.walk import module_internals

    internals = module_internals()
    modules_b = dict(b.named_modules())
    found = []
    for path, ma in a.named_modules():
        mb = modules_b.get(path)
        if mb is None or not same_class(type(ma), type(mb)):
            if not_compared is not None:
                why = "the rebuilt model has no module there" if mb is None else (
                    f"A's is {type(ma).__module__}.{type(ma).__qualname__}, the rebuilt model's "
                    f"{type(mb).__module__}.{type(mb).__qualname__}")
                not_compared.append(f"Python state of `{path or '<model>'}` ({why})")
            continue
        vb = vars(mb)
        for name, value in vars(ma).items():
            if name in internals or name == "training":
                continue
            plain = isinstance(value, _ATOMS) or (isinstance(value, tuple) and all(isinstance(v, _ATOMS) for v in value))
            if plain and name in vb and vb[name] != value:
                found.append(f"{path + '.' if path else ''}{name}: {value!r} vs {vb[name]!r}")
        in_state = set(ma.state_dict(keep_vars=True)) if ma._non_persistent_buffers_set else set()
        for name in ma._non_persistent_buffers_set:  # a flag kept in a buffer that state_dict() leaves out
            ta, tb = ma._buffers.get(name), mb._buffers.get(name)
            if name not in in_state and isinstance(ta, torch.Tensor) and isinstance(tb, torch.Tensor) and (
                    ta.shape != tb.shape or not torch.equal(ta, tb)):
                shown = f"{ta.item()!r} vs {tb.item()!r}" if ta.numel() == 1 else "values differ"
                found.append(f"{path + '.' if path else ''}{name}: {shown} (buffer kept out of state_dict())")
    return found


def _state_outside_tensors(a: nn.Module, b: nn.Module, path: str) -> list[str]:
    """What differs between A's and B's module at ``path`` after the reload, outside state_dict(): plain
    attributes (floats, NumPy arrays, ...), buffers kept out of it, parameters a state_dict override drops.
    Each is named with its qualified name."""
    try:
        ma, mb = a.get_submodule(path), b.get_submodule(path)
    except AttributeError:
        return []
    prefix = f"{path}." if path else ""
    found = []
    for name, value in vars(ma).items():
        if name.startswith("_") or name == "training" or isinstance(value, (nn.Module, torch.Tensor)):
            continue
        other = vars(mb).get(name)
        if isinstance(value, np.ndarray):
            if not (isinstance(other, np.ndarray) and value.shape == other.shape and np.array_equal(value, other)):
                found.append(f"`{prefix}{name}` (ndarray)")
        elif isinstance(value, (int, float, complex, str, bool, list, tuple)) and value != other:
            found.append(f"`{prefix}{name}` ({type(value).__name__})")
    in_state = set(ma.state_dict())
    for kind, named_a, named_b in (("buffer", ma.named_buffers(recurse=False), dict(mb.named_buffers(recurse=False))),
                                   ("parameter", ma.named_parameters(recurse=False), dict(mb.named_parameters(recurse=False)))):
        for name, t in named_a:
            other = named_b.get(name)
            if name not in in_state and (other is None or not torch.equal(t, other)):
                found.append(f"`{prefix}{name}` ({kind} kept out of state_dict())")
    return found


def roundtrip_findings(build: Callable[[], nn.Module], example_input: Any, known: list[Finding],
                       atol: float = 0.0) -> list[Finding]:
    """R007 when the reloaded model's outputs differ (or the strict load fails); the cause is taken from the
    container findings in ``known`` when one covers the differing module. A round trip that could not run, or
    could not compare some module, is an N004 note naming what was not compared and why (with any R007 it found
    besides): it never passes as a clean result. Raises only ``UserError`` (see ``run_roundtrip``)."""
    rt = run_roundtrip(build, example_input, atol)
    if rt.error is not None:
        return [RULES["N004"].finding("<roundtrip>", "the save-reload round trip (R007) could not run, so state lost "
                                      f"in a checkpoint was not compared: {rt.error}")]
    notes = [RULES["N004"].finding("<roundtrip>", "the save-reload round trip (R007) did not compare "
                                   + "; ".join(rt.not_compared[:3]) + (" ..." if len(rt.not_compared) > 3 else ""))
             ] if rt.not_compared else []
    return _roundtrip_r007(rt, known) + notes


def _roundtrip_r007(rt: RoundTrip, known: list[Finding]) -> list[Finding]:
    """The R007 finding of a round trip that ran (none when it found no difference)."""
    if rt.equal and not rt.resume_differs:
        return []
    if rt.unexpected_keys or rt.missing_keys:
        parts = []
        if rt.lazy_keys:
            parts.append(f"{len(rt.lazy_keys)} key(s) exist only after a forward (created lazily): {', '.join(rt.lazy_keys[:3])}")
        others = [k for k in rt.unexpected_keys if k not in rt.lazy_keys]
        if others:
            parts.append(f"{len(others)} unexpected: {', '.join(others[:3])}")
        if rt.missing_keys:
            parts.append(f"{len(rt.missing_keys)} missing: {', '.join(rt.missing_keys[:3])}")
        path = (rt.lazy_keys or rt.unexpected_keys or rt.missing_keys)[0].rsplit(".", 1)[0]
        return [RULES["R007"].finding(path,
                        "load_state_dict(strict=True) of the saved state into a freshly built model fails: " + "; ".join(parts))]
    if rt.resume_differs:
        return [_resume_finding(rt)]
    where = rt.first_differing if rt.first_differing else "<model>"
    cause = ""
    covering = [f for f in known if f.rule in _CONTAINER_RULES and f.params
                and (where == f.path or where.startswith(f.path + "."))]
    path = where
    if covering:
        f = covering[0]
        path = f.path
        cause = f"; cause: {f.rule} `{f.path}` ({f.params:,} parameters outside state_dict())"
    elif rt.outside:
        cause = f"; state outside tensors (not in state_dict()): {', '.join(rt.outside)}"
    else:  # a plain tensor attribute forward reads inside the differing module: a rebuild makes it anew
        inside = [f for f in known if f.rule in ("R004", "R008") and f.severity is not Severity.INFO
                  and (where == "<model>" or f.path == where or f.path.startswith(where + "."))]
        if inside:
            cause = (f"; likely cause: {inside[0].rule} `{inside[0].path}`, a plain tensor outside state_dict(): a "
                     "reload keeps the new build's values")
    return [RULES["R007"].finding(path,
        f"after a save and reload the outputs differ; first module whose output differs: `{where}`{cause}",
    )]


def _resume_finding(rt: RoundTrip) -> Finding:
    """R007 for the resume case, naming the Python attributes that differed before the step (the likely cause)."""
    what = []
    if rt.resume_output_diff:
        what.append(f"outputs differ (max |a - b| {rt.resume_output_diff:.3g})")
    if rt.resume_keys:
        more = ", ..." if len(rt.resume_keys) > 3 else ""
        what.append(f"state_dict() after it differs in {', '.join(f'`{k}`' for k in rt.resume_keys[:3])}{more}")
    if rt.resume_attrs:
        path = rt.resume_attrs[0].split(":", 1)[0]
        cause = ("; Python state outside state_dict() that the checkpoint lost: "
                 + ", ".join(f"`{a}`" for a in rt.resume_attrs[:4]) + (", ..." if len(rt.resume_attrs) > 4 else "")
                 + " (keep it in a buffer, e.g. register_buffer(name, torch.tensor(value)), or get_extra_state())")
    else:
        path = rt.resume_keys[0].rsplit(".", 1)[0] if rt.resume_keys else "<model>"
        cause = ""
    return RULES["R007"].finding(path,
        "resuming from a checkpoint changes training: after a save and reload, one more train-mode forward on the "
        f"same batch and RNG {' and '.join(what)}{cause}")


def check_roundtrip(build: Callable[[], nn.Module], example_input: Any, atol: float = 0.0) -> list[Finding]:
    """R007 for the model ``build()`` makes: the library entry point (the pytest plugin's fixture uses it too).
    The container findings of the attribute walk explain a difference when they cover it.

    ``example_input``: as ``find_unregistered``; ``atol``: the largest absolute output difference that still counts
    as equal. Side effects: calls ``build()`` three times and runs forwards in train and eval mode, with the global
    RNG state saved and restored around the round trip. A ``build()`` or forward that fails is no exception here: the
    result holds an N004 note saying what was not compared and why (so ``assert_reloads`` fails on it too). Raises
    what the first ``build()`` raises (before any round trip), else only ``UserError`` (the time limit, a refusal of
    ours)."""
    from ssdaudit.registration.unregistered import find_unregistered

    known = find_unregistered(build(), None)
    return roundtrip_findings(build, example_input, known, atol)
