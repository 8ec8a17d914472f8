"""Gate rules (K): what ``ssdaudit check`` reports about a configured model beyond its findings. They give SARIF and
GitHub annotations a result for a model the gate could not audit or whose expectations broke, which would otherwise
fail CI with nothing on the pull request to say why."""

from __future__ import annotations

from ssdaudit.core.findings import Rule, Severity, register

register(
    Rule(
        code='K001',
        name='model-not-audited',
        severity=Severity.ERROR,
        summary='a configured model could not be built, probed or trained within the limits, so the gate could not audit it',
        why='a model the gate cannot audit is not known to be clean: the check fails (exit 2) rather than pass it unseen.',
        fix='fix what the message names (the target, its input shape, a forward that hangs), or raise timeout under [tool.ssdaudit]',
        bad_example='[[tool.ssdaudit.models]]\ntarget = "models/net.py:bulid"   # a typo: no such function',
        good_example='[[tool.ssdaudit.models]]\ntarget = "models/net.py:build"',
        found_by=('check',),
    ),
    Rule(
        code='K002',
        name='expectation-broken',
        severity=Severity.ERROR,
        summary="a configured model breaks an expectation of the gate: its parameter count, its reference's count, its checkpoint size, or expect = \"fail\"",
        why='a count that moved is how a layer that fell out of the registry shows in CI before anyone reads a finding.',
        fix='fix the model, or update the expectation in [[tool.ssdaudit.models]] when the change is deliberate',
        bad_example='params = 4_577_792     # the model now registers 2,765,024',
        good_example='params = 4_577_792     # and the model registers 4,577,792',
        found_by=('check',),
    ),
)
