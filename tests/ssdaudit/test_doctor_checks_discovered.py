"""The doctor's checks are discovered from their package: every registered T rule has a check module, and a check
whose code is no registered rule is an error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ssdaudit.core.findings import RULES
from ssdaudit.training.doctor.checks import CHECKS, all_checks, discover


def test_every_registered_t_rule_has_a_check_module() -> None:
    checked = {code for cls in CHECKS for code in (cls.code, *cls.also)}
    missing = sorted(code for code in RULES if code[0] in "TF" and code not in checked)
    assert not missing, f"registered T/F rules without a check in ssdaudit/training/doctor/checks/: {missing}"


def test_every_check_is_one_of_a_registered_rule_and_all_checks_builds_one_each() -> None:
    assert CHECKS and all(cls.code in RULES for cls in CHECKS)
    built = all_checks()
    assert [type(c) for c in built] == CHECKS and len({id(c) for c in built}) == len(built)
    assert [c.code for c in CHECKS] == sorted(c.code for c in CHECKS)


def _package(tmp_path: Path, name: str, code: str) -> Path:
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "t_new.py").write_text(
        "from ssdaudit.training.doctor.checks.base import Check\n\n"
        f"class NewCheck(Check):\n    code = {code!r}\n")
    return pkg


def test_a_check_whose_code_is_no_registered_rule_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    bad = _package(tmp_path, "fake_checks_bad", "T999")
    with pytest.raises(ValueError, match="T999.*no rule of the registry"):
        discover([str(bad)], "fake_checks_bad")
    good = _package(tmp_path, "fake_checks_good", "T001")  # one new module is all a check needs
    assert [cls.__name__ for cls in discover([str(good)], "fake_checks_good")] == ["NewCheck"]
    for name in [m for m in sys.modules if m.startswith("fake_checks_")]:
        del sys.modules[name]
