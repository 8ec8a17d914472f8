"""The doctor's plumbing in the user's process: watches nest and detach in any order, a second loop in another
thread has its own watch, an exception raised inside backward or ``step()`` reaches the user unchanged and leaves
the watch consistent, and an internal error disables only the check that raised it (with a note)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssdaudit.core import patches
from ssdaudit.core.findings import Severity
from ssdaudit.training.doctor import Watch, watch
from ssdaudit.training.doctor.checks import all_checks
from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context


def setup(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    return model, torch.optim.SGD(model.parameters(), lr=0.05), torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)


def failing(w: Watch) -> list[str]:
    return sorted({f.rule for f in w.findings() if f.severity in (Severity.ERROR, Severity.WARNING)})


def train(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int,
          clear: bool = True) -> None:
    for _ in range(steps):
        if clear:
            opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()


# --- nesting ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("first_out", ["outer", "inner"])
def test_nested_watches_detached_in_either_order_keep_each_others_zero_grad(first_out: str) -> None:
    model, opt, x, y = setup()
    outer = watch(model, opt).attach()
    inner = watch(model, opt).attach()
    train(model, opt, x, y, 3)
    gone, stays = (outer, inner) if first_out == "outer" else (inner, outer)
    gone.detach()
    train(model, opt, x, y, 3)  # zero_grad every step: the watch still attached must see each one
    stays.detach()
    assert failing(outer) == [] and failing(inner) == [], (failing(outer), failing(inner))
    assert stays.steps == 6 and gone.steps == 3
    assert "zero_grad" not in vars(opt) and "zero_grad" not in vars(model)


@pytest.mark.parametrize("first_out", ["outer", "inner"])
def test_detaching_from_an_object_with_its_own_zero_grad(first_out: str) -> None:
    model, opt, x, y = setup()
    cleared: list[int] = []

    def own_zero_grad(set_to_none: bool = True) -> None:  # the user's own, an instance attribute
        cleared.append(1)
        for p in model.parameters():
            p.grad = None

    opt.zero_grad = own_zero_grad  # type: ignore[method-assign]
    a, b = watch(model, opt).attach(), watch(model, opt).attach()
    train(model, opt, x, y, 3)
    (a if first_out == "outer" else b).detach()
    (b if first_out == "outer" else a).detach()
    assert opt.zero_grad is own_zero_grad and len(cleared) == 3
    assert failing(a) == [] and failing(b) == []
    # the bug twin: nothing clears; both watches name it
    model2, opt2, x2, y2 = setup()
    with watch(model2, opt2) as c, watch(model2, opt2) as d:
        train(model2, opt2, x2, y2, 3, clear=False)
    assert "T001" in failing(c) and "T001" in failing(d)


def test_every_patch_ends_with_the_last_watch() -> None:
    before = patches.active()
    model, opt, x, y = setup()
    with watch(model, opt):
        with watch(model, opt):
            assert len(patches.active()) > len(before)
        assert len(patches.active()) > len(before)
    assert patches.active() == before


# --- threads ------------------------------------------------------------------------------------------------

def test_a_second_loop_in_another_thread_has_its_own_watch() -> None:
    """Two loops at once, each in its thread with its own watch: the buggy one's loss calls, forwards and steps
    reach only its own watch."""
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def loop(name: str, clear: bool, seed: int) -> None:
        try:
            model, opt, x, y = setup(seed)
            with watch(model, opt) as w:
                start.wait(timeout=60)
                for _ in range(30):
                    if clear:
                        opt.zero_grad()
                    out = model(x)
                    # the bug also broadcasts (N, 1) against (N,): a tap another thread's watch must not take
                    F.mse_loss(out if not clear else out.squeeze(1), y.squeeze(1)).backward()
                    opt.step()
            results[name] = failing(w)
        except BaseException as exc:  # pragma: no cover - what the test looks for
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=("bug", False, 1)), threading.Thread(target=loop, args=("clean", True, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert results == {"bug": ["T001", "T010"], "clean": []}, results


# --- exceptions from the user's code ------------------------------------------------------------------------

class Boom(RuntimeError):
    pass


def run_with_failures(where: str, doctor: bool, clear: bool) -> tuple[list[str], list[BaseException]]:
    """A loop whose 2nd backward (a hook on the input raises, after the parameters' gradients began) or whose 2nd
    ``step()`` (inside SGD's update, after the step's pre-hooks ran: a momentum buffer of the wrong shape) raises;
    the user catches it and goes on. The findings, and the exceptions the user caught."""
    model, _, x, y = setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    first = next(model.parameters())
    w = watch(model, opt).attach() if doctor else None
    caught: list[BaseException] = []
    for i in range(6):
        if clear:
            opt.zero_grad()
        inp = x.clone().requires_grad_(where == "backward" and i == 1)
        if inp.requires_grad:
            def boom(grad: torch.Tensor) -> None:
                raise Boom("backward failed")

            inp.register_hook(boom)
        if where == "step" and i == 1:
            opt.state[first]["momentum_buffer"] = torch.zeros(3)
        try:
            F.mse_loss(model(inp), y).backward()
            opt.step()
        except (Boom, RuntimeError) as exc:
            caught.append(exc)
            opt.state[first].pop("momentum_buffer", None)
    if w is not None:
        w.detach()
    return (failing(w) if w is not None else []), caught


@pytest.mark.parametrize("where", ["backward", "step"])
def test_an_exception_inside_backward_or_step_reaches_the_user_and_the_watch_stays_consistent(where: str) -> None:
    _, plain = run_with_failures(where, doctor=False, clear=True)
    clean, watched = run_with_failures(where, doctor=True, clear=True)
    assert [(type(e), str(e)) for e in watched] == [(type(e), str(e)) for e in plain] and len(plain) == 1
    assert clean == [], clean  # no false alarm from the half-done step
    bug, _ = run_with_failures(where, doctor=True, clear=False)
    assert "T001" in bug, bug  # the watch still follows the backwards after the failure


def test_the_exception_object_from_backward_is_the_users_own() -> None:
    model, opt, x, y = setup()
    inp = x.clone().requires_grad_()
    mine = Boom("mine")

    def boom(grad: torch.Tensor) -> None:
        raise mine

    inp.register_hook(boom)
    with watch(model, opt) as w:
        with pytest.raises(Boom) as info:
            F.mse_loss(model(inp), y).backward()
        assert info.value is mine
        train(model, opt, x, y, 3)
    assert w.steps == 3 and failing(w) == []


# --- our own errors -----------------------------------------------------------------------------------------

class Broken(Check):
    code = "T001"

    def __init__(self) -> None:
        self.calls = 0

    def on_step_pre(self, ctx: Context) -> None:
        self.calls += 1
        raise ZeroDivisionError("a bug of ours")


def test_an_internal_error_disables_that_check_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSDAUDIT_RAISE_INTERNAL", raising=False)
    model, opt, x, y = setup()
    broken = Broken()
    with Watch(model, opt, checks=[broken, *all_checks()]) as w:
        train(model, opt, x, y, 4, clear=False)
    assert broken.calls == 1  # disabled after its first failure
    assert len(w.ctx.internal_errors) == 1
    note = w.ctx.internal_errors[0].splitlines()[0]
    assert "Broken (T001) disabled" in note and "ZeroDivisionError('a bug of ours')" in note
    assert "T001" in failing(w)  # the other checks go on (NeverCleared names the bug)
    assert w.report().to_dict()["internal_errors"] == [note]


def test_under_the_test_suite_an_internal_error_raises() -> None:
    model, opt, x, y = setup()
    with Watch(model, opt, checks=[Broken()]):
        with pytest.raises(ZeroDivisionError):
            train(model, opt, x, y, 1)


class _Calls(Check):
    """Records which modules' forward calls reach it (``module_types``/``module_roots`` set per test)."""

    def __init__(self) -> None:
        self.pre: list[tuple[str, bool]] = []
        self.post: list[tuple[str, bool]] = []

    def on_module_pre(self, ctx: Context, module: nn.Module, args: tuple[Any, ...], root: bool) -> None:
        self.pre.append((type(module).__name__, root))

    def on_module_post(self, ctx: Context, module: nn.Module, output: Any, root: bool) -> None:
        self.post.append((type(module).__name__, root))


class _BatchNormOnly(_Calls):
    module_types = (nn.modules.batchnorm._BatchNorm,)
    module_roots = False


class _RootsOnly(_Calls):
    module_types = ()


def test_module_calls_reach_a_check_by_its_declared_types_and_roots() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    every, bn, roots = _Calls(), _BatchNormOnly(), _RootsOnly()
    with Watch(model, opt, checks=[every, bn, roots]):
        F.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 2, (8,))).backward()
        opt.step()
    assert every.pre == [("Sequential", True), ("Linear", False), ("BatchNorm1d", False), ("ReLU", False),
                         ("Linear", False)]
    assert every.post == [("Linear", False), ("BatchNorm1d", False), ("ReLU", False), ("Linear", False),
                          ("Sequential", True)]
    assert bn.pre == bn.post == [("BatchNorm1d", False)]
    assert roots.pre == roots.post == [("Sequential", True)]


class _EveryCall(_Calls):
    every_call = True


def test_with_every_10_inner_training_calls_between_checks_reach_only_checks_that_need_every_call() -> None:
    """Steps 1 and 11 are due: there every check sees every call. On the steps between, a check sees the root call
    and the calls of modules in eval mode (a validation forward, a frozen layer), and the inner calls of training
    layers only when it sets ``every_call``; pre and post calls stay paired."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.Linear(4, 2))
    model[1].eval()  # a layer kept in eval mode: its calls are never skipped
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sampled, every = _Calls(), _EveryCall()
    with Watch(model, opt, every=10, checks=[sampled, every]):
        for _ in range(12):
            opt.zero_grad()
            F.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 2, (8,))).backward()
            opt.step()
    whole = [("Sequential", True), ("Linear", False), ("Dropout", False), ("Linear", False)]
    between = [("Sequential", True), ("Dropout", False)]
    assert every.pre == whole * 12
    assert sampled.pre == whole + between * 9 + whole + between
    assert sorted(sampled.post) == sorted(sampled.pre) and sorted(every.post) == sorted(every.pre)
    assert len(every.post) == len(every.pre) == 48


class _EvalCallsOnly(_Calls):
    training_calls = False


class _NoGradCallsOnly(_Calls):
    grad_calls = False


class _DoneAfterTwo(_Calls):
    def on_module_pre(self, ctx: Context, module: nn.Module, args: tuple[Any, ...], root: bool) -> None:
        super().on_module_pre(ctx, module, args, root)
        self.module_calls_done = len(self.pre) >= 2


class _Student(nn.Module):
    """A trained model that calls a teacher under no_grad inside its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.teacher = nn.Linear(4, 2), nn.Sequential(nn.Linear(4, 2), nn.ReLU())
        self.norm = nn.BatchNorm1d(2)
        self.norm.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.teacher(x)
        return self.norm(self.body(x)) - target


def test_inner_calls_reach_a_check_by_mode_and_stop_when_it_is_done() -> None:
    """``training_calls = False``: eval-mode calls only; ``grad_calls = False``: calls under no_grad only (a teacher
    inside forward); root calls reach both; step 1 is due, steps 2 and 3 are not (``every=10``). ``module_calls_done``: no calls from the next step on. Calls that reach
    no check keep the root right (the stack) on every step."""
    torch.manual_seed(0)
    model = _Student()
    model.teacher[1].eval()
    opt = torch.optim.SGD(model.body.parameters(), lr=0.1)
    evals, no_grad, done, roots = _EvalCallsOnly(), _NoGradCallsOnly(), _DoneAfterTwo(), _RootsOnly()
    with Watch(model, opt, every=10, checks=[evals, no_grad, done, roots]):
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(8, 4)).pow(2).mean().backward()
            opt.step()
    assert evals.pre == [("_Student", True), ("ReLU", False), ("BatchNorm1d", False)] * 3
    # the teacher's train-mode layers on the steps between checks: sampled out like every train-mode inner call
    assert no_grad.pre == ([("_Student", True), ("Sequential", False), ("Linear", False), ("ReLU", False)]
                           + [("_Student", True), ("ReLU", False)] * 2)
    assert sorted(evals.post) == sorted(evals.pre) and sorted(no_grad.post) == sorted(no_grad.pre)
    assert done.pre == [("_Student", True), ("Sequential", False), ("Linear", False), ("ReLU", False),
                        ("Linear", False), ("BatchNorm1d", False)]  # the whole first step, then nothing
    assert roots.pre == roots.post == [("_Student", True)] * 3


class _BrokenOnModules(_Calls):
    def on_module_pre(self, ctx: Context, module: nn.Module, args: tuple[Any, ...], root: bool) -> None:
        raise ZeroDivisionError("a bug of ours")


def test_a_check_disabled_during_a_module_call_does_not_skip_the_next_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSDAUDIT_RAISE_INTERNAL", raising=False)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    after = _Calls()
    with Watch(model, opt, checks=[_BrokenOnModules(), after]) as w:
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
    assert after.pre == [("Sequential", True), ("Linear", False), ("ReLU", False)]
    assert len(w.ctx.internal_errors) == 1


def test_the_step_log_reads_events_after_the_last_of_a_kind() -> None:
    from ssdaudit.training.doctor.events import StepEvent as E, StepLog

    log = StepLog()
    assert log.after_last(E.BACKWARD) is None and log.since(E.OTHER_STEP) == []
    for e in (E.BACKWARD, E.OTHER_STEP, E.ZERO_GRAD, E.BACKWARD, E.CLIP):
        log.add(e)
    assert log.after_last(E.BACKWARD) == [E.CLIP]
    assert log.since(E.OTHER_STEP) == [E.ZERO_GRAD, E.BACKWARD, E.CLIP]
    assert log.since(E.UNSCALE) == list(log) and E.UNSCALE not in log and E.CLIP in log
    log.clear()
    assert len(log) == 0


def test_the_doctor_reads_the_device_once_per_checked_step_and_never_between() -> None:
    """Host syncs from the doctor's own code (``.item()``, ``.tolist()``, ``bool()``/``int()``/``float()`` of a
    tensor, ``.cpu()``): one per step with ``every=1`` after the first, none on the steps between checks with
    ``every=5`` (a regression once added a second read of the non-finite guard's flag)."""
    import sys
    from collections import Counter
    from pathlib import Path

    import ssdaudit

    ours = str(Path(ssdaudit.__file__).resolve().parent)
    calls: Counter[int] = Counter()
    step = [0]
    saved = {name: getattr(torch.Tensor, name) for name in
             ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")}

    def wrap(original: Any) -> Any:
        def wrapper(t: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if sys._getframe(1).f_code.co_filename.startswith(ours):
                calls[step[0]] += 1
            return original(t, *args, **kwargs)
        return wrapper

    for every, steps in ((1, 6), (5, 11)):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        calls.clear()
        with Watch(model, opt, every=every):
            try:
                for name, original in saved.items():
                    setattr(torch.Tensor, name, wrap(original))
                for k in range(steps):
                    step[0] = k
                    opt.zero_grad()
                    F.cross_entropy(model(torch.randn(8, 3, 8, 8)), torch.randint(0, 4, (8,))).backward()
                    opt.step()
            finally:
                for name, original in saved.items():
                    setattr(torch.Tensor, name, original)
        later = [calls[k] for k in range(1, steps)]
        if every == 1:
            assert later == [1] * (steps - 1), calls
        else:
            assert [later[k - 1] for k in range(1, steps) if k % every] == [0] * (steps - 1 - (steps - 1) // every)
            assert all(later[k - 1] <= 1 for k in range(1, steps) if k % every == 0), calls
