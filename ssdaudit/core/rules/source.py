"""Source rules (E): a file the linter cannot read."""

from __future__ import annotations

from ssdaudit.core.findings import Rule, Severity, register

register(
    Rule(
        code='E999',
        name='syntax-error',
        severity=Severity.ERROR,
        summary='a Python file that does not parse',
        why='nothing in it can be checked, so a gate that skipped it would pass without looking.',
        fix='fix the syntax error (python -m py_compile FILE shows it)',
        bad_example='def forward(self, x)                  # missing colon',
        good_example='def forward(self, x):',
        found_by=('lint',),
        message='SyntaxError: {error}',
    ),
)
