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
cannot compare a module, ``RoundTrip.error`` / ``RoundTrip.not_compared`` say what and why (``RoundTrip.status``),
and the R007 rule (``rules.r007_reload_mismatch``) reports it as an N004 note instead of a clean result.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import io
import random
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from ssdaudit.core.forward_call import call_forward
from ssdaudit.core.errors import UserError, first_line
from ssdaudit.core.findings import Finding
from ssdaudit.registration.evidence import RoundTrip, RoundTripStatus
from ssdaudit.registration.move_probe import first_sample
from ssdaudit.registration.rules.r007_reload_mismatch import judge_roundtrip
from ssdaudit.registration.walk import unregistered_module_names


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
        a, b, result = _saved_and_reloaded(build, example_input)
        a.eval()
        b.eval()
        x = first_sample(example_input)  # eval mode takes one sample: half the work at batch 2
        diff = _differ(_eval_outputs(a, x), _eval_outputs(b, x), atol)
        result.equal = diff is None and not result.missing_keys and not result.unexpected_keys
        result.max_abs_diff = diff or 0.0
        if diff is not None:  # only now: record every module's output, to name the first that differs
            _name_first_differing(a, b, x, atol, result)
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


def _saved_and_reloaded(build: Callable[[], nn.Module], example_input: Any) -> tuple[nn.Module, nn.Module, RoundTrip]:
    """A (one train-mode forward, then a stand-in training step) saved through an in-memory ``torch.save`` /
    ``torch.load(weights_only=True)`` into B (strict; on a key mismatch the keys are recorded and the common ones
    loaded). Returns A, B and the round trip so far (its key lists)."""
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
    return a, b, result


def _eval_outputs(model: nn.Module, x: Any, recorder: "_Recorder | None" = None) -> list[torch.Tensor]:
    """The model's output tensors on ``x`` under no_grad with a fixed seed (``recorder``: every module's too)."""
    with torch.no_grad(), (recorder or contextlib.nullcontext()):
        _seeded(7)
        return _outputs(_forward(model, _clone_input(x)))


def _name_first_differing(a: nn.Module, b: nn.Module, x: Any, atol: float, result: RoundTrip) -> None:
    """Both models again with every module's output recorded: the first module, in execution order, whose output
    differs (``result.first_differing``) and the state outside tensors that stayed behind (``result.outside``)."""
    rec_a, rec_b = _Recorder(a), _Recorder(b)
    _eval_outputs(a, x, rec_a)
    _eval_outputs(b, x, rec_b)
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
            return


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


def roundtrip_findings(build: Callable[[], nn.Module], example_input: Any, known: Sequence[Finding],
                       atol: float = 0.0) -> tuple[list[Finding], RoundTripStatus]:
    """The round trip of ``build()``'s model judged by R007 (``rules.r007_reload_mismatch``): R007 when the
    reloaded model's outputs differ (or the strict load fails), its cause taken from the container findings in
    ``known`` when one covers the differing module; a round trip that could not run, or could not compare some
    module, is an N004 note naming what and why (never a clean result). Returns the findings and the round trip's
    status (``RoundTrip.status``). Raises only ``UserError`` (see ``run_roundtrip``)."""
    rt = run_roundtrip(build, example_input, atol)
    return judge_roundtrip(rt, known), rt.status


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
    return roundtrip_findings(build, example_input, known, atol)[0]
