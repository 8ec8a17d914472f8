"""Class: bugs that only show on a GPU, found on a CPU. ``nn.Parameter(torch.empty(n)).to(device)`` is a registered
parameter when ``device`` is the CPU and a plain tensor on CUDA: the runtime checks cannot see it on a CPU machine.
``ssdaudit params`` lints the source of the model's own classes (only those), maps each static finding to the
attribute paths of the instances, and merges it with a runtime finding at the same path: one finding, both
evidences."""

from __future__ import annotations

import textwrap
from pathlib import Path

from torch import nn

from ssdaudit.core.findings import Severity
from ssdaudit.registration.pipeline import audit_target
from ssdaudit.registration.source_lint import user_classes

MODEL = '''
import torch
from torch import nn

device = "cpu"


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = {wrap}

    def forward(self, x):
        return x * self.w


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.gate = Gate()
        self.gate2 = Gate()

    def forward(self, x):
        return self.gate2(self.gate(self.fc(x)))


def example_input():
    return torch.rand(2, 3)
'''
MOVED_AFTER_WRAP = "nn.Parameter(torch.empty(3).uniform_()).to(device)"
MOVED_INSIDE = "nn.Parameter(torch.empty(3, device=device).uniform_())"

PLAIN_LIST = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = [nn.Linear(3, 3), nn.Linear(3, 3)]

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def example_input():
    return torch.rand(2, 3)
'''


def _file(tmp_path: Path, text: str) -> tuple[str, list[str]]:
    path = tmp_path / "model.py"
    path.write_text(textwrap.dedent(text))
    return f"{path}:Net", path.read_text().splitlines()


def _line_of(lines: list[str], text: str) -> int:
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_parameter_moved_after_wrap_is_found_on_a_cpu(tmp_path):
    target, lines = _file(tmp_path, MODEL.format(wrap=MOVED_AFTER_WRAP))
    report = audit_target(target, roundtrip=False)
    r009 = [f for f in report.findings if f.rule == "R009"]
    assert len(r009) == 1, report.findings  # one bug in one class: one finding, the other instance named in it
    f = r009[0]
    assert f.severity is Severity.ERROR
    assert f.path == "gate.w" and "`gate2.w`" in f.message
    assert f.location is not None and Path(f.location.path).name == "model.py"
    assert f.location.line == _line_of(lines, "self.w = nn.Parameter")
    assert report.exit_code() == 1


def test_clean_twin_moved_inside_gives_no_finding(tmp_path):
    target, _ = _file(tmp_path, MODEL.format(wrap=MOVED_INSIDE))
    report = audit_target(target, roundtrip=False)
    assert [f for f in report.findings if f.severity is not Severity.INFO] == []


def test_suppressions_hold(tmp_path):
    for comment in ("  # ssdaudit: ignore[R009]", "  # noqa: R009"):
        target, _ = _file(tmp_path, MODEL.format(wrap=MOVED_AFTER_WRAP + comment))
        report = audit_target(target, roundtrip=False)
        assert not [f for f in report.findings if f.rule == "R009"], comment


def test_no_source_lint_when_asked(tmp_path):
    target, _ = _file(tmp_path, MODEL.format(wrap=MOVED_AFTER_WRAP))
    assert not [f for f in audit_target(target, roundtrip=False, lint_source=False).findings if f.rule == "R009"]


def test_a_bug_both_find_is_one_finding_with_both_evidences(tmp_path):
    target, lines = _file(tmp_path, PLAIN_LIST)
    report = audit_target(target, roundtrip=False)
    r001 = [f for f in report.findings if f.rule in ("R001", "R002")]
    assert len(r001) == 1, report.findings
    line = _line_of(lines, "self.blocks = [")
    assert r001[0].path == "blocks" and r001[0].params == 24  # the runtime's evidence: the live objects counted
    assert f"also found in source at {Path(r001[0].location.path)}:{line}" in r001[0].message  # the linter's
    assert r001[0].location.line == line


def test_only_the_models_own_classes_are_linted(tmp_path):
    target, _ = _file(tmp_path, MODEL.format(wrap=MOVED_INSIDE))
    from ssdaudit.core.targets import load_target

    model = load_target(target).model
    classes = {c.cls.__name__: c.paths for c in user_classes(model)}
    assert classes == {"Net": [""], "Gate": ["gate", "gate2"]}  # not nn.Linear: torch's classes are not linted
    assert user_classes(nn.Sequential(nn.Linear(2, 2), nn.ReLU())) == []


def test_a_wrap_the_cpu_also_breaks_is_one_finding_with_both_evidences(tmp_path):
    """``.double()`` (or ``.t()``) after the wrap returns a plain tensor on the CPU too: the runtime's R004 and the
    linter's R009 at one attribute path are one finding. It is R009, the cause, with R009's fix (operate before
    wrapping), never R004's register_buffer, which would make a trainable weight a constant."""
    target, lines = _file(tmp_path, MODEL.format(wrap="nn.Parameter(torch.empty(3).uniform_()).double()")
                          .replace("return x * self.w", "return x * self.w.float()"))
    report = audit_target(target, roundtrip=False)
    at_w = [f for f in report.findings if f.path in ("gate.w", "gate2.w")]
    assert sorted(f.path for f in at_w) == ["gate.w", "gate2.w"], report.findings  # one per instance, not two
    for f in at_w:
        assert f.rule == "R009" and f.severity is Severity.ERROR
        assert "register_buffer" not in f.fix and "before wrapping" in f.fix
        assert f"found in source at {Path(f.location.path)}:{_line_of(lines, 'self.w = nn.Parameter')}" in f.message
        assert "at runtime:" in f.message  # the runtime evidence is kept
