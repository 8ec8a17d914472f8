"""Keep the README's pasted outputs true: every ```` <!-- run: CMD --> ```` block holds what CMD prints today.

    python docs/update_readme.py          # rewrite the blocks in README.md (the rules table, the benchmark table)
tests/test_readme.py runs the same commands and fails when a block differs from today's output.
Commands run in process through typer's CliRunner at a fixed width, without colour.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's ssdaudit, whatever else is installed
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- run: (?P<cmd>.+?) -->\n```\n(?P<body>.*?)```\n", re.DOTALL)
BENCH = re.compile(r"(<!-- bench -->\n)(?P<body>.*?)(<!-- /bench -->)", re.DOTALL)
RULES_TABLE = re.compile(r"(<!-- rules -->\n)(?P<body>.*?)(<!-- /rules -->)", re.DOTALL)
WIDTH = 100


def run(cmd: str) -> str:
    """What `cmd` (an `ssdaudit ...` or `ssdlite ...` command line) prints, as a user sees it at WIDTH columns."""
    from typer.testing import CliRunner

    argv = shlex.split(cmd)
    if argv[0] == "ssdaudit":
        from ssdaudit.cli import app
    elif argv[0] == "ssdlite":
        from ssdlite_model.cli import app
    else:
        raise ValueError(f"not an ssdaudit/ssdlite command: {cmd}")
    import os

    old = os.getcwd()
    os.chdir(ROOT)
    try:
        result = CliRunner(env={"COLUMNS": str(WIDTH), "NO_COLOR": "1", "TERM": "dumb"}).invoke(app, argv[1:])
    finally:
        os.chdir(old)
    text = result.stdout
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n" + f"(exit {result.exit_code})\n"


def blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group("cmd"), m.group("body")) for m in BLOCK.finditer(text)]


def render(text: str) -> str:
    def fill(m: re.Match) -> str:
        cmd = m.group("cmd")
        return f"<!-- run: {cmd} -->\n```\n$ {cmd}\n{run(cmd)}```\n"

    text = BLOCK.sub(fill, text)
    from ssdaudit.render.rule_docs import rules_table

    text = RULES_TABLE.sub(lambda m: m.group(1) + rules_table() + m.group(3), text)
    table = ROOT / "out" / "bench" / "results.md"
    if table.exists():
        text = BENCH.sub(lambda m: m.group(1) + table.read_text() + m.group(3), text)
    return text


def main() -> None:
    new = render(README.read_text())
    README.write_text(new)
    print(f"updated {len(blocks(new))} command blocks in {README}", file=sys.stderr)


if __name__ == "__main__":
    main()
