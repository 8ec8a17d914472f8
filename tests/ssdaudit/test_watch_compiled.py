"""The doctor under ``torch.compile`` (inductor on CPU): the same findings as eager with the model compiled and with
the whole training step compiled, paths without ``_orig_mod``, no torch warning of the doctor's own, and the
runner's optimizer hook never traced (an optimizer built inside a compiled function)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssdaudit.core.findings import Severity
from ssdaudit.training.doctor import watch

ROOT = Path(__file__).resolve().parents[2]
REPRO = Path("/work/shared/repro/optimizer_in_compiled_fn.py")
STEPS = 3


def model_for(case: str) -> nn.Module:
    torch.manual_seed(0)
    if case == "T012":
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    return nn.Sequential(nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))


def batch(case: str, bug: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    if case == "T012":
        img = torch.randint(0, 256, (4, 3, 8, 8), generator=g).float()
        return (img if bug else (img / 255 - 0.5) / 0.25), torch.randint(0, 3, (4,), generator=g)
    return torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)


def run(case: str, bug: bool, compiled: str, doctor: bool = True) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(rule, path) of the failing findings, the internal errors, and the warnings shown, for one loop:
    T006 (eval mode while training), T012 (unnormalised inputs), T001 (never cleared); ``compiled``: "" (eager),
    "model" (``torch.compile(model)``) or "step" (the whole training step compiled)."""
    torch._dynamo.reset()
    model = model_for(case)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = batch(case, bug)
    net: Any = torch.compile(model) if compiled == "model" else model

    def step() -> torch.Tensor:
        if not (bug and case == "T001"):
            opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    train_step = torch.compile(step) if compiled == "step" else step
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        w = watch(net, opt).attach() if doctor else None
        for _ in range(STEPS):
            if case == "T006" and bug:
                net.eval()
            else:
                net.train()
            train_step()
        if w is not None:
            w.detach()
    found = sorted({(f.rule, f.path) for f in w.findings() if f.severity in (Severity.ERROR, Severity.WARNING)}) if w else []
    return found, (list(w.ctx.internal_errors) if w else []), [f"{s.category.__name__}: {s.message}" for s in shown]


@pytest.mark.parametrize("bug", [True, False], ids=["bug", "clean"])
@pytest.mark.parametrize("case,compiled", [("T006", "model"), ("T012", "model"), ("T001", "step")])
def test_compiled_findings_are_the_eager_ones(case: str, compiled: str, bug: bool) -> None:
    eager, eager_errors, _ = run(case, bug, "")
    found, errors, shown = run(case, bug, compiled)
    assert (case in {r for r, _ in eager}) is bug, eager
    assert found == eager and not errors and not eager_errors, (found, eager, errors)
    assert not any("_orig_mod" in path for _, path in found)
    # the doctor adds no torch warning of its own (e.g. "global hooks ... fire an extra time")
    _, _, alone = run(case, bug, compiled, doctor=False)
    assert sorted(set(shown)) == sorted(set(alone)), sorted(set(shown) - set(alone))


def test_torch_still_warns_about_the_users_own_global_hooks() -> None:
    """Only our own cause of torch's compiled-module warning is filtered: the user's global hook still gets it."""
    model = model_for("T006")
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, _ = batch("T006", False)
    net = torch.compile(model, backend="eager")
    handle = nn.modules.module.register_module_forward_hook(lambda m, a, o: None)
    try:
        with watch(net, opt), warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            net(x)
    finally:
        handle.remove()
    assert any("global hooks" in str(s.message) for s in shown)


def test_an_optimizer_built_in_a_compiled_function_under_ssdaudit_watch(tmp_path: Path) -> None:
    script = tmp_path / "optimizer_in_compiled_fn.py"
    script.write_text(REPRO.read_text() if REPRO.exists() else _REPRO_TEXT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "ssdaudit", "watch", "--", "python", str(script)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no silent errors found" in proc.stdout, proc.stdout


_REPRO_TEXT = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


def make(model):
    return torch.optim.Adam(model.parameters(), lr=1e-3)


torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
optimizer = torch.compile(make, backend="eager")(model)
x = torch.randn(256, 8)
y = (x[:, 0] > 0).long()
for step in range(30):
    xb, yb = x[step % 16 * 16:(step % 16 + 1) * 16], y[step % 16 * 16:(step % 16 + 1) * 16]
    optimizer.zero_grad()
    F.cross_entropy(model(xb), yb).backward()
    optimizer.step()
print("done")
'''


def test_a_compiled_submodule_is_named_by_the_users_path() -> None:
    """A model holding `torch.compile(body)`: findings (T006 here, and the gradient-flow rows) name `body.1`, never
    `body._orig_mod.1`."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5))
    model = nn.Sequential()
    model.add_module("body", torch.compile(body, backend="eager"))
    model.add_module("head", nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = batch("T006", True)
    with watch(model, opt) as w:
        for _ in range(STEPS):
            model.eval()  # the bug: trained in eval mode
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    paths = {f.path for f in w.findings()}
    assert any(f.rule == "T006" and f.path.startswith("body.") for f in w.findings()), [(f.rule, f.path) for f in w.findings()]
    assert not any("_orig_mod" in p for p in paths), paths


@pytest.mark.parametrize("bug", [False, True], ids=["clean", "zero_grad-missing"])
def test_compiled_autograd_backward_is_seen_to_end(bug: bool) -> None:
    """Compiled autograd runs no callback queued on the autograd engine, so the end of each backward is marked at
    the next backward or step(): the clean loop gets no finding (it got a false T005, "no backward reached the
    optimizer's parameters"), and a loop that never clears its gradients is still named (T001)."""
    from torch._dynamo import compiled_autograd

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    with watch(model, opt) as w:
        for _ in range(3):
            if not bug:
                opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            with compiled_autograd._enable(torch.compile(backend="eager")):
                loss.backward()
            opt.step()
    assert [f.rule for f in w.findings() if f.severity is not Severity.INFO] == (["T001"] if bug else [])
    assert w.ctx.internal_errors == []
