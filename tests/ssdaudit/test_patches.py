"""The one owner of process-wide patches (``ssdaudit.core.patches``): layered, counted, restored by identity in any
order, listed; and nothing patched by ``import ssdaudit`` or by loading the pytest plugin."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from ssdaudit.core import patches

ROOT = Path(__file__).resolve().parents[2]


def _owner() -> types.SimpleNamespace:
    def f(x: int) -> int:
        return x + 1

    return types.SimpleNamespace(f=f)


def _adds(n: int) -> patches.Make:
    def make(call_next: Any) -> Any:
        def wrapper(x: int) -> int:
            return call_next(x) * 10 + n

        return wrapper

    return make


@pytest.mark.parametrize("order", ["lifo", "fifo"])
def test_two_owners_released_in_either_order_leave_exactly_the_original(order: str) -> None:
    ns = _owner()
    original = ns.f
    a = patches.patch(ns, "f", _adds(1), compile_safe=False)
    b = patches.patch(ns, "f", _adds(2), compile_safe=False)
    assert ns.f(0) == (1 * 10 + 1) * 10 + 2  # newest layer outermost, each calls the next
    first, second = (b, a) if order == "lifo" else (a, b)
    first.release()
    assert ns.f(0) == (1 * 10 + (1 if first is b else 2))  # the other layer still acts, alone
    second.release()
    assert ns.f is original and ns.f(0) == 1
    assert not any(p.attribute == "f" and "SimpleNamespace" in p.target for p in patches.active())


def test_a_key_is_reference_counted_and_a_release_twice_does_nothing() -> None:
    ns = _owner()
    original = ns.f
    made = []

    def make(call_next: Any) -> Any:
        made.append(1)
        return lambda x: call_next(x) + 100

    h1 = patches.patch(ns, "f", make, key="k", compile_safe=False)
    h2 = patches.patch(ns, "f", make, key="k", compile_safe=False)
    assert len(made) == 1 and ns.f(0) == 101
    h1.release()
    h1.release()  # a second release of the same handle is a no-op, not a second reference dropped
    assert ns.f(0) == 101
    h2.release()
    assert ns.f is original


def test_class_methods_staticmethods_and_instance_attributes_are_restored_as_stored() -> None:
    class K:
        def m(self) -> str:
            return "m"

        @staticmethod
        def s() -> str:
            return "s"

    raw_s = K.__dict__["s"]
    k = K()
    k.own = lambda: "own"  # type: ignore[attr-defined]
    own = k.own  # type: ignore[attr-defined]
    hs = [patches.patch(K, "m", lambda nxt: lambda self: nxt(self) + "!", compile_safe=False),
          patches.patch(K, "s", lambda nxt: lambda: nxt() + "!", compile_safe=False),
          patches.patch(k, "own", lambda nxt: lambda: nxt() + "!", compile_safe=False),
          patches.patch(k, "m", lambda nxt: lambda: nxt() + "?", compile_safe=False)]
    assert (k.m(), K.s(), k.own()) == ("m!?", "s!", "own!")  # type: ignore[attr-defined]
    assert isinstance(K.__dict__["s"], staticmethod)
    for h in hs:
        h.release()
    assert K.__dict__["s"] is raw_s and k.own is own and "m" not in k.__dict__  # type: ignore[attr-defined]
    assert k.m() == "m"


def test_a_patch_someone_else_put_over_ours_stays_and_ours_goes_transparent() -> None:
    ns = _owner()
    original = ns.f
    h = patches.patch(ns, "f", _adds(1), compile_safe=False)
    ours = ns.f
    ns.f = lambda x: ours(x) + 1000  # a library wraps us
    h.release()
    assert ns.f is not original and ns.f(0) == 1001  # theirs kept; ours now calls the original straight
    assert not patches.is_patched(ns, "f")


def test_patching_is_thread_safe() -> None:
    ns = _owner()
    original = ns.f
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for _ in range(200):
                patches.patch(ns, "f", _adds(0), compile_safe=False).release()
        except BaseException as exc:  # pragma: no cover - the failure we look for
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and ns.f is original


def test_the_registry_lists_what_a_watch_holds() -> None:
    import torch
    from torch import nn

    import ssdaudit

    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {(p.target, p.attribute) for p in patches.active()}
    with ssdaudit.watch(model, opt):
        held = {(p.target, p.attribute) for p in patches.active()} - before
    assert ("torch.nn.functional", "cross_entropy") in held
    assert ("torch.nn.modules.module.Module", "load_state_dict") in held
    assert ("warnings", "_showwarnmsg") in held
    # the optimizer (on the instance) and the model (on its class, acting for that instance only: nothing of ours
    # sits on the user's module, which torch.save(model) would pickle)
    assert ("torch.nn.modules.linear.Linear", "zero_grad") in held and "zero_grad" not in vars(model)
    assert sum(attr == "zero_grad" for _, attr in held) == 2
    assert {(p.target, p.attribute) for p in patches.active()} == before
    known = set(patches.KNOWN) | {("torch.nn.modules.linear.Linear", "zero_grad")}  # the watched model's class
    assert all((t, a) in known for t, a in held if not t.startswith("<")), held - known


def test_import_and_the_pytest_plugin_patch_nothing() -> None:
    """Every attribute ssdaudit ever patches on torch or the standard library (the owner's registry, filled by the
    modules that patch) keeps its identity through `import ssdaudit`, its public names, and loading the pytest
    plugin module; and the owner holds no patch."""
    code = textwrap.dedent("""
        import importlib, sys, warnings
        import torch, torch.nn.functional, torch.optim, torch.nn.utils.clip_grad
        from torch.amp.grad_scaler import GradScaler
        from torch.optim.lr_scheduler import LRScheduler
        import torch.multiprocessing
        owners = [torch, torch.nn.Module, torch.nn.Parameter, torch.nn.functional, torch.nn.utils,
                  torch.nn.utils.clip_grad, torch.optim.Optimizer, GradScaler, LRScheduler, warnings,
                  torch.multiprocessing, sys.modules["torch.multiprocessing.spawn"]]
        before = {(id(o), k): v for o in owners for k, v in vars(o).items()}
        import ssdaudit
        for name in ssdaudit.__all__:
            getattr(ssdaudit, name)
        importlib.import_module("ssdaudit.gate.pytest_plugin")
        # every module that patches something registers what it may patch
        for mod in ("ssdaudit.training.doctor.taps", "ssdaudit.training.doctor.runner", "ssdaudit.training.loads",
                    "ssdaudit.registration.observe", "ssdaudit.training.doctor.watch"):
            importlib.import_module(mod)
        from ssdaudit.core import patches
        assert patches.active() == [], patches.active()
        assert len(patches.KNOWN) >= 25, patches.KNOWN
        changed = []
        for path, name in patches.KNOWN:
            owner = patches.resolve(path)
            assert any(owner is o for o in owners), path
            if vars(owner).get(name) is not before.get((id(owner), name)):
                changed.append(f"{path}.{name}")
        assert not changed, changed
        print("ok", len(patches.KNOWN))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok"), proc.stdout
