"""The probe where users really work: other devices and dtypes, batch 1, eval-only paths, returned tensors,
setattr names, intentionally hidden modules. Each class of failure has a clean twin."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ssdaudit import Severity, audit_params, find_unregistered
from ssdaudit.registration.move_probe import find_device_strays

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
import buggy_plain_list  # noqa: E402
import fixed_modulelist  # noqa: E402

BACKBONE = 1_812_800
X = torch.rand(2, 8)


def by_rule(findings, rule):
    return [f for f in findings if f.rule == rule]


def errors(findings):
    return [f for f in findings if f.severity is Severity.ERROR]


@pytest.fixture(scope="module")
def buggy():
    return buggy_plain_list.build_model()


@pytest.fixture(scope="module")
def fixed():
    return fixed_modulelist.build_model()


def test_seed_bug_after_double_is_found_not_raised(buggy):
    """The CPU twin of `.cuda()`: the registry moves, the list does not, forward fails; the finding says why."""
    model = buggy_plain_list.build_model().double()
    findings = find_unregistered(model, torch.rand(2, 3, 300, 300, dtype=torch.float64))
    (r001,) = by_rule(findings, "R001")
    assert r001.path == "backbone" and r001.params == BACKBONE and r001.severity is Severity.ERROR
    assert ".to(float64) never moved it" in r001.message and "forward fails with" in r001.message
    assert "float32 on cpu" in r001.message
    (note,) = by_rule(findings, "N004")
    assert note.severity is Severity.INFO and "explained" in note.message


def test_dtype_move_probe_names_the_seed_backbone(buggy, fixed):
    x = torch.rand(2, 3, 300, 300)
    result = find_device_strays(buggy, x)
    assert result.error is None
    params = {n for n, _ in fixed.named_parameters() if n.startswith("backbone.")}
    strays = {s.name: s for s in result.strays}
    assert params <= set(strays)  # every backbone parameter, by the name it would have once registered
    assert sum(strays[n].numel for n in params) == BACKBONE
    assert all(s.dtype == torch.float32 for s in result.strays)
    assert next(buggy.parameters()).dtype == torch.float32  # the model itself was not moved
    assert find_device_strays(fixed, x).strays == []


def test_batch_one_uses_eval_mode_and_says_so(fixed):
    findings = find_unregistered(fixed, torch.rand(1, 3, 300, 300))
    assert errors(findings) == []
    (note,) = by_rule(findings, "N004")
    assert "eval mode only" in note.message and "more than 1 value per channel" in note.message
    assert all(m.training for m in fixed.modules())  # the mode is restored


def test_forward_failure_is_a_warning_note_not_an_exception():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(8, 8)]

        def forward(self, x):
            raise RuntimeError("boom")

    findings = find_unregistered(Broken(), X)
    assert by_rule(findings, "R001")[0].params == 72  # the walk's finding survives
    (note,) = by_rule(findings, "N004")
    assert note.severity is Severity.WARNING and "boom" in note.message


class EvalOnly(nn.Module):
    """A plain tensor read only at inference (the probe used to run only in the mode the model was built in)."""

    def __init__(self, register):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        table = torch.linspace(0, 1, 8)
        if register:
            self.register_buffer("calib", table)
        else:
            self.calib = table

    def forward(self, x):
        y = self.lin(x)
        return y if self.training else y * self.calib


def test_tensor_read_only_in_eval_mode():
    (f,) = by_rule(find_unregistered(EvalOnly(False), X), "R004")
    assert f.path == "calib" and f.severity is Severity.WARNING
    assert f.location and f.location.line == EvalOnly.__init__.__code__.co_firstlineno + 7
    assert [f for f in find_unregistered(EvalOnly(True), X) if f.severity is not Severity.INFO] == []


class ReturnsPriors(nn.Module):
    """Priors handed to the loss as part of the output, never computed with."""

    def __init__(self, register):
        super().__init__()
        self.lin = nn.Linear(8, 4)
        priors = torch.rand(5, 4)
        if register:
            self.register_buffer("priors", priors, persistent=False)
        else:
            self.priors = priors

    def forward(self, x):
        return self.lin(x), self.priors


def test_tensor_returned_by_forward():
    (f,) = by_rule(find_unregistered(ReturnsPriors(False), X), "R004")
    assert f.path == "priors" and "returned by forward" in f.message
    assert [f for f in find_unregistered(ReturnsPriors(True), X) if f.rule.startswith("R")] == []


class SetattrEmbeds(nn.Module):
    def __init__(self, register):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        for i in range(2):
            if register:
                self.register_buffer(f"pos_embed{i}", torch.rand(8))
            else:
                setattr(self, f"pos_embed{i}", torch.rand(8))

    def forward(self, x):
        return self.lin(x) + self.pos_embed0 + self.pos_embed1


def test_setattr_tensor_has_a_source_location():
    found = by_rule(find_unregistered(SetattrEmbeds(False), X), "R004")
    assert {f.path for f in found} == {"pos_embed0", "pos_embed1"}
    line = SetattrEmbeds.__init__.__code__.co_firstlineno + 7
    assert all(f.location and f.location.path.endswith("test_probe_trust.py") and f.location.line == line for f in found)
    assert by_rule(find_unregistered(SetattrEmbeds(True), X), "R004") == []


class ScalarsAndSelfMoved(nn.Module):
    """Plain tensors that cannot break a device move: a 0-dim integer, and a table forward moves itself."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.register_buffer("steps", torch.tensor(3))
        self.limit = self.steps.clone()  # 0-dim, derived from a buffer
        self.table = torch.rand(8)  # sinusoid-like table, moved to the input on every call

    def forward(self, x):
        table = self.table.to(device=x.device, dtype=x.dtype)
        return self.lin(x) * self.limit + table


def test_scalar_and_self_moved_tensors_are_notes():
    findings = find_unregistered(ScalarsAndSelfMoved(), X)
    assert by_rule(findings, "R004") == []
    notes = {f.path: f for f in by_rule(findings, "N005")}
    assert set(notes) == {"limit", "table"} and all(f.severity is Severity.INFO for f in notes.values())
    assert "0-dim" in notes["limit"].message and "moves it first" in notes["table"].message


class Student(nn.Module):
    def __init__(self, teacher_holder):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.teacher = teacher_holder

    def forward(self, x):
        y = self.lin(x)
        with torch.no_grad():
            t = self.teacher[0](x)
        return y, t


def test_frozen_teacher_in_a_list_is_a_note():
    teacher = nn.Linear(8, 8).requires_grad_(False)
    findings = find_unregistered(Student([teacher]), X)
    (note,) = by_rule(findings, "N006")
    assert note.path == "teacher" and note.params == 72 and note.severity is Severity.INFO
    assert "state_dict()" in note.message and errors(findings) == []


def test_teacher_run_under_no_grad_is_a_note_even_when_trainable():
    findings = find_unregistered(Student([nn.Linear(8, 8)]), X)
    assert [f.rule for f in findings if f.path == "teacher"] == ["N006"]


def test_trainable_hidden_module_stays_an_error():
    class Trains(Student):
        def forward(self, x):
            return self.lin(x) + self.teacher[0](x)

    (f,) = by_rule(find_unregistered(Trains([nn.Linear(8, 8)]), X), "R001")
    assert f.severity is Severity.ERROR and f.params == 72


class SkipsApply(nn.Module):
    """A module whose _apply skips a buffer: .to() leaves it behind although it is registered."""

    def __init__(self, skip):
        super().__init__()
        self.skip = skip
        self.lin = nn.Linear(8, 8)
        self.register_buffer("scale", torch.ones(8))

    def _apply(self, fn, recurse=True):
        keep = self.scale
        out = super()._apply(fn, recurse)
        if self.skip:
            self._buffers["scale"] = keep
        return out

    def forward(self, x):
        return self.lin(x) * self.scale


def test_r008_device_move_check_finds_a_registered_tensor_left_behind():
    report = audit_params(SkipsApply(True), example_input=X)
    (f,) = by_rule(report.findings, "R008")
    assert f.path == "scale" and f.severity is Severity.ERROR and "not moved by .to()" in f.message
    assert by_rule(audit_params(SkipsApply(False), example_input=X).findings, "R008") == []


def test_r008_reports_a_global_tensor_by_the_module_that_reads_it():
    table = torch.rand(8)

    class Global(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(8, 8)

        def forward(self, x):
            return self.head(x) + table

    (f,) = by_rule(audit_params(Global(), example_input=X).findings, "R008")
    assert f.path == "<model>" and "reachable from no attribute" in f.message
    assert f.severity is Severity.INFO  # it may be a cache keyed by device: a note, named by its reader


def test_seed_bug_audit_has_no_duplicate_r008(buggy):
    report = audit_params(buggy, example_input=torch.rand(2, 3, 300, 300))
    assert [f.rule for f in errors(report.findings)] == ["R001"]


class MovedInSource(nn.Module):
    """When no forward pass can run (meta device, a failing probe), the forward's source decides."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.table = torch.rand(8)
        self.only_in_init = torch.rand(3)

    def forward(self, x):
        return self.lin(x) + self.table.detach().type_as(x).to(device=x.device, copy=True)


class ReadInSource(MovedInSource):
    def forward(self, x):
        return self.lin(x) + self.table


def test_without_a_probe_the_forward_source_decides():
    found = {f.path: f.rule for f in find_unregistered(MovedInSource(), None) if f.rule in ("R004", "N005")}
    assert found == {"table": "N005"}  # moved by forward; only_in_init never read there
    found = {f.path: f.rule for f in find_unregistered(ReadInSource(), None) if f.rule in ("R004", "N005")}
    assert found == {"table": "R004"}


class ReplacesItsBuffer(nn.Module):
    """A cache kept as a registered buffer and rebuilt by forward when the input size changes (ConViT's pattern)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.register_buffer("cache", torch.zeros(1, 3), persistent=False)

    def forward(self, x):
        if self.cache.shape[0] != x.shape[0]:
            self.cache = torch.ones(x.shape[0], 8)
        return self.lin(x) * self.cache


def test_probe_puts_back_replaced_buffers_and_metadata_reads_are_no_use():
    model = ReplacesItsBuffer()
    original = model.cache
    findings = find_unregistered(model, X)
    assert model.cache is original and model.cache.shape == (1, 3)
    assert [f for f in findings if f.severity is not Severity.INFO] == []
