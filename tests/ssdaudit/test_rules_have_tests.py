"""Every registered rule of the registration, lint-loop, checkpoint, gate and note families (R, L, C, K, N codes)
is named by at least one test other than this one: a rule added without a test fails here."""

import re
from pathlib import Path

from ssdaudit.core.findings import RULES

TESTS = Path(__file__).resolve().parents[1]
FAMILIES = ("R", "L", "C", "K", "N")


def _untested(codes, texts):
    return [code for code in codes if not any(re.search(rf"\b{code}\b", text) for text in texts)]


def test_every_registered_rule_has_a_test():
    me = Path(__file__).resolve()
    texts = [p.read_text(encoding="utf-8") for p in TESTS.rglob("*.py") if p.resolve() != me]
    codes = sorted(c for c in RULES if c.startswith(FAMILIES))
    assert len(codes) >= 30  # the families are registered (the scan below is not vacuous)
    assert _untested(codes, texts) == []


def test_a_rule_no_test_names_is_reported():
    assert _untested(["R001", "Z999"], ["def test_r(): assert 'R001' in codes"]) == ["Z999"]
    assert _untested(["R001"], ["R0011 is another code"]) == ["R001"]  # a whole code, not a prefix of another
