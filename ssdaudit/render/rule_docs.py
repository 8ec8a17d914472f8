"""The rule pages in docs/rules/<CODE>.md, generated from the catalogue plus an example per rule.

    python -m ssdaudit.render.rule_docs          # rewrite docs/rules/
A test checks that the committed pages equal what this writes, so the pages never drift from the catalogue.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ssdaudit.core.findings import RULES

COMMANDS = {"lint": "`ssdaudit lint` (source)", "params": "`ssdaudit params` (runtime)",
            "gradflow": "`ssdaudit gradflow`", "diff": "`ssdaudit diff`",
            "watch": "`ssdaudit.watch` and `ssdaudit watch` (runtime)", "check": "`ssdaudit check` (the CI gate)",
            "resume": "`ssdaudit resume` (a run against the same run resumed from its own checkpoint)"}


def page(code: str) -> str:
    r = RULES[code]
    bad, good = r.bad_example, r.good_example
    found_by = " and ".join(COMMANDS[c] for c in r.found_by)
    lint = "lint" in r.found_by
    silence = [
        f"- On one line (lint): `# noqa: {code}` or `# ssdaudit: ignore[{code}]`" if lint else None,
        f"- In `ssdaudit check`: `ignore = [\"{code}\"]` under `[tool.ssdaudit]` in pyproject.toml",
        "- For existing findings only: record them with `ssdaudit check --baseline FILE --write-baseline`",
        f"- On the command line: `ssdaudit lint --ignore {code}`" if lint else None,
        f"- In a watched loop: `ssdaudit.watch(model, optimizer, ignore=[\"{code}\"])`, or "
        f"`ssdaudit watch --ignore {code} -- python train.py`" if "watch" in r.found_by else None,
    ]
    return "\n".join([
        f"# {code} {r.name}",
        "",
        f"**What it finds:** {r.summary}.",
        "",
        f"Severity: {r.severity.value}.",
        *([ "", f"Message: `{r.message}`"] if r.message else []),
        "",
        f"Reported by {found_by}.",
        "",
        *([f"Can cause: {', '.join(r.causes)}. Their findings, seen at its step or later in the same run, are "
           "reported as its consequences (`caused_by`), folded under it.", ""] if r.causes else []),
        *([f"Can be a consequence of: {', '.join(by)}. Seen after one of them, it is reported under it "
           "(`caused_by`).", ""] if (by := [c for c, other in RULES.items() if code in other.causes]) else []),
        "## Why it matters",
        "",
        r.why,
        "",
        "## Example",
        "",
        "```python",
        bad,
        "```",
        "",
        "## Fix",
        "",
        r.fix[:1].upper() + r.fix[1:] + ":",
        "",
        "```python",
        good,
        "```",
        "",
        *([f"Automatic fix (`ssdaudit lint --fix`): {r.autofix}", ""] if r.autofix else []),
        "## Silence it",
        "",
        *[s for s in silence if s],
        "",
    ])


def rules_table() -> str:
    """The README's rules table: one row per rule, from the registry."""
    rows = ["| code | name | severity | found by | what |", "|---|---|---|---|---|"]
    for c, r in RULES.items():
        rows.append(f"| [{c}](docs/rules/{c}.md) | {r.name} | {r.severity.value} | {', '.join(r.found_by)} | {r.summary} |")
    return "\n".join(rows) + "\n"


def write_pages(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for code in RULES:
        path = folder / f"{code}.md"
        path.write_text(page(code))
        out.append(path)
    index = ["# Rules", "", "| code | name | finds |", "|---|---|---|"]
    index += [f"| [{c}]({c}.md) | {r.name} | {r.summary} |" for c, r in RULES.items()]
    (folder / "README.md").write_text("\n".join(index) + "\n")
    return out


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "docs/rules"
    print(f"wrote {len(write_pages(target))} rule pages to {target}")
