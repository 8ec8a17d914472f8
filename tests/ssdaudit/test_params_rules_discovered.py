"""The rules of ``ssdaudit params`` are discovered from their package: every registered rule that params reports
has a rule module, and a module that names an unknown code (or a code params does not report) is an error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ssdaudit.core.findings import RULES
from ssdaudit.registration.evidence import ParamsEvidence, ProbeStatus
from ssdaudit.registration.model_index import ModelIndex
from ssdaudit.registration.rules import RULE_MODULES, Phase, codes_of, discover, judge


def test_every_rule_params_reports_has_a_module() -> None:
    covered = {code for module in RULE_MODULES for code in codes_of(module)}
    missing = sorted(code for code, rule in RULES.items() if "params" in rule.found_by and code not in covered)
    assert not missing, f"rules params reports without a module in ssdaudit/registration/rules/: {missing}"
    assert {"R001", "R008", "N001"} <= covered  # the scan is not vacuous


def test_modules_are_in_report_order_each_named_after_its_code() -> None:
    names = [m.__name__.rsplit(".", 1)[1] for m in RULE_MODULES]
    assert all(n.split("_", 1)[0].upper() == m.CODE for n, m in zip(names, RULE_MODULES))
    keys = [(list(Phase).index(m.PHASE), m.ORDER, m.CODE) for m in RULE_MODULES]
    assert keys == sorted(keys)


def _package(tmp_path: Path, name: str, module: str, code: str, also: tuple[str, ...] = ()) -> Path:
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / f"{module}.py").write_text(
        "from ssdaudit.core.findings import RULES\n"
        "from ssdaudit.registration.rules import Phase\n\n"
        f"CODE = {code!r}\nALSO = {also!r}\nPHASE = Phase.AUDIT\nORDER = 99\n\n\n"
        "def check(evidence, earlier):\n"
        "    if not list(evidence.index.model.parameters()):\n"
        f"        yield RULES[{code!r}].finding('<model>', 'a model without parameters', severity=None)\n")
    return pkg


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("fake_params_rules_")]:
        del sys.modules[name]


@pytest.mark.parametrize("module, code, also, error", [
    ("r999_unknown", "R999", (), "'R999' is no rule of the registry that params reports"),
    ("r009_parameter_moved_after_wrap", "R009", (), "'R009' is no rule"),  # a lint-only rule
    ("n003_probe_skipped", "N003", ("Z001",), "'Z001' is no rule"),
    ("n003_probe_skipped", "N004", (), "CODE 'N004' is not 'N003'"),
    ("n003_wrong_name", "N003", (), "name it n003_probe_skipped.py"),
])
def test_a_module_naming_an_unknown_code_is_an_error(on_path: Path, module: str, code: str,
                                                    also: tuple[str, ...], error: str) -> None:
    name = f"fake_params_rules_{module}"
    bad = _package(on_path, name, module, code, also)
    with pytest.raises(ValueError, match=error):
        discover([str(bad)], name)


def test_one_new_module_is_all_a_rule_needs(on_path: Path) -> None:
    good = _package(on_path, "fake_params_rules_good", "n003_probe_skipped", "N003")
    (module,) = discover([str(good)], "fake_params_rules_good")
    empty, full = ModelIndex.of(nn.Identity()), ModelIndex.of(nn.Linear(2, 2))
    found = list(module.check(ParamsEvidence(empty, ProbeStatus.skipped()), ()))
    assert [f.rule for f in found] == ["N003"]
    assert list(module.check(ParamsEvidence(full, ProbeStatus.skipped()), ())) == []


def test_judge_runs_one_phase_and_hands_each_rule_the_findings_before_it() -> None:
    class Hidden(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = [nn.Linear(2, 2)]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers[0](x)

    evidence = ParamsEvidence(ModelIndex.of(Hidden()), ProbeStatus.skipped())
    assert [f.rule for f in judge(Phase.PROBE, evidence)] == ["R001", "N003"]
    assert judge(Phase.AUDIT, evidence) == []  # no round trip, no tied or frozen parameters
