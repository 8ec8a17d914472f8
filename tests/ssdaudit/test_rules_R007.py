"""R007 never passes by default. Class 1: a build function that re-imports its library each call makes the rebuilt
model's layers instances of other class objects with the same module and qualified name; they are the same layers,
so an ActNorm-style ``initialized`` flag outside state_dict() is still found (clean twin: the flag in a buffer).
Class 2: a round trip that cannot run (its state makes the save/load raise) is an N004 note saying what was not
compared and why, never a clean result (clean twin: the same state that travels)."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

from ssdaudit.core.findings import Severity
from ssdaudit.registration.params import audit_params
from ssdaudit.registration.roundtrip import check_roundtrip, run_roundtrip

FLOWS = '''
import torch
from torch import nn


class ActNorm(nn.Module):
    """Glow's activation normalisation: scale and shift set from the first training batch."""

    def __init__(self, ch):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(ch))
        self.logs = nn.Parameter(torch.zeros(ch))
        {flag_init}

    def forward(self, x):
        if self.training and not {flag_read}:
            with torch.no_grad():
                self.loc.copy_(-x.mean(0))
                self.logs.copy_(-(x.std(0) + 1e-6).log())
            {flag_set}
        return (x + self.loc) * self.logs.exp()


class Affine(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.net = nn.Linear(ch // 2, ch)

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        s, t = self.net(a).chunk(2, dim=1)
        return torch.cat([a, b * torch.sigmoid(s + 2) + t], dim=1)


class Composite(nn.Module):
    """Three transforms in a row, as a flow library composes them."""

    def __init__(self, ch):
        super().__init__()
        self.transforms = nn.ModuleList([ActNorm(ch), Affine(ch), ActNorm(ch)])

    def forward(self, x):
        for t in self.transforms:
            x = t(x)
        return x
'''
PYTHON_FLAG = {"flag_init": "self.initialized = False", "flag_read": "self.initialized",
               "flag_set": "self.initialized = True"}
BUFFER_FLAG = {"flag_init": 'self.register_buffer("initialized", torch.tensor(False))',
               "flag_read": "bool(self.initialized)", "flag_set": "self.initialized.fill_(True)"}
X = torch.randn(16, 6) * 3 + 1


def reimporting_build(tmp_path: Path, flag: dict[str, str]) -> Callable[[], nn.Module]:
    """A build function that imports the library afresh on every call (same module name, new class objects)."""
    name = f"flowlib_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text(FLOWS.format(**flag))

    def build() -> nn.Module:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module.Composite(6)

    return build


def test_reimported_classes_are_the_same_layers(tmp_path: Path) -> None:
    build = reimporting_build(tmp_path, PYTHON_FLAG)
    assert type(build()) is not type(build())  # the classes really are other objects on each call
    (f,) = check_roundtrip(build, X)
    assert f.rule == "R007" and f.severity is Severity.ERROR and "resuming" in f.message
    assert "`transforms.0.initialized: True vs False`" in f.message


def test_reimported_classes_with_the_flag_in_a_buffer_are_clean(tmp_path: Path) -> None:
    assert check_roundtrip(reimporting_build(tmp_path, BUFFER_FLAG), X) == []


class Opaque:
    """Extra state torch.save writes but torch.load(weights_only=True) refuses (a plain Python object)."""

    def __init__(self, value: float) -> None:
        self.value = value


class WithExtraState(nn.Module):
    def __init__(self, travels: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.travels = travels
        self.scale = float(torch.rand(()))

    def get_extra_state(self) -> Any:
        return {"scale": self.scale} if self.travels else Opaque(self.scale)

    def set_extra_state(self, state: Any) -> None:
        self.scale = state["scale"] if isinstance(state, dict) else state.value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.scale


def test_round_trip_that_cannot_run_is_a_note_not_equal() -> None:
    rt = run_roundtrip(lambda: WithExtraState(travels=False), torch.rand(3, 4))
    assert not rt.equal and rt.error is not None and "Unpickling" in rt.error
    (f,) = check_roundtrip(lambda: WithExtraState(travels=False), torch.rand(3, 4))
    assert f.rule == "N004" and f.severity is Severity.INFO and f.path == "<roundtrip>"
    assert "could not run" in f.message and "not compared" in f.message and "Unpickling" in f.message


def test_round_trip_that_runs_on_the_same_state_is_clean() -> None:
    rt = run_roundtrip(lambda: WithExtraState(travels=True), torch.rand(3, 4))
    assert rt.equal and rt.error is None and not rt.not_compared
    assert check_roundtrip(lambda: WithExtraState(travels=True), torch.rand(3, 4)) == []


def test_params_audit_reports_the_note() -> None:
    model = WithExtraState(travels=False)
    report = audit_params(model, example_input=torch.rand(3, 4), rebuild=lambda: WithExtraState(travels=False))
    assert [f.rule for f in report.findings if f.path == "<roundtrip>"] == ["N004"]


def test_assert_reloads_fails_when_nothing_was_compared(ssdaudit: Any) -> None:
    with pytest.raises(pytest.fail.Exception, match="N004"):
        ssdaudit.assert_reloads(lambda: WithExtraState(travels=False), torch.rand(3, 4))
    ssdaudit.assert_reloads(lambda: WithExtraState(travels=True), torch.rand(3, 4))


class PlainListHead(nn.Module):
    """R007's buggy case as a report sees it: a head in a plain list, rebuilt with new weights on every build."""

    def __init__(self, registered: bool) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        heads = [nn.Linear(4, 2)]
        self.heads = nn.ModuleList(heads) if registered else heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads[0](self.body(x))


def test_the_report_keeps_the_round_trip_status_it_judged() -> None:
    x = torch.rand(3, 4)
    buggy = audit_params(PlainListHead(False), example_input=x, rebuild=lambda: PlainListHead(False))
    assert buggy.roundtrip is not None and (buggy.roundtrip.ran, buggy.roundtrip.compared) == (True, True)
    assert buggy.roundtrip.equal is False and "R007" in [f.rule for f in buggy.findings]
    clean = audit_params(PlainListHead(True), example_input=x, rebuild=lambda: PlainListHead(True))
    assert clean.roundtrip is not None and clean.roundtrip.equal is True and clean.roundtrip.reason == ""
    failed = audit_params(WithExtraState(False), example_input=x, rebuild=lambda: WithExtraState(travels=False))
    assert failed.roundtrip is not None and failed.roundtrip.ran and not failed.roundtrip.compared
    assert failed.roundtrip.equal is None and "Unpickling" in failed.roundtrip.reason
    skipped = audit_params(PlainListHead(True), example_input=x)
    assert skipped.roundtrip is not None and not skipped.roundtrip.ran
    assert skipped.roundtrip.reason == "no factory to rebuild the model"
