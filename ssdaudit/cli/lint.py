"""``ssdaudit lint``: the static rules over Python source (nothing is imported or run)."""

from __future__ import annotations

from pathlib import Path

import typer

from ssdaudit.cli.app import app, fail
from ssdaudit.cli.output import Format, cli_errors, emit, exit_with


@app.command()
def lint(
    paths: list[Path] = typer.Argument(..., help="Python files or folders (searched recursively)."),
    ignore: str = typer.Option("", "--ignore", help="Rule codes to skip, comma-separated, e.g. R004."),
    exclude: list[Path] = typer.Option([], "--exclude", help="Files or folders read for context (base classes) but not reported; repeatable."),
    fmt: Format = typer.Option(Format.text, "--format", help="text, json, sarif or github."),
) -> None:
    """Static rules over Python source (nothing is imported or run), inside nn.Module classes.

    Rules: R001 modules in a plain list/dict/tuple (also .append), R002 parameters in one, R003 a module wrapped
    in a plain object, R004 a plain tensor attribute read in forward(), R005 a module built in forward(), R009
    nn.Parameter(...).to(device), R010 register_buffer/add_module inside forward(), E999 a file that does not parse.
    Each rule has a page: docs/rules/<CODE>.md (or `ssdaudit rules CODE`). Silence one line with
    `# ssdaudit: ignore[R001]`.

    Exit codes: 0 clean, 1 findings, 2 a path that does not exist.

    Examples:

      ssdaudit lint src/ models/

      ssdaudit lint . --format github

      ssdaudit lint model.py --format sarif > ssdaudit.sarif
    """
    with cli_errors(fmt is Format.json):
        from ssdaudit.core.findings import rule_codes
        from ssdaudit.lint.engine import lint_paths

        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            fail(f"no such file or folder: {missing[0]}")
        codes, unknown = rule_codes(ignore.split(","))
        if unknown:
            fail(f"unknown rule code {unknown[0]!r} in --ignore (see `ssdaudit rules`)")
        result = lint_paths(list(paths), codes, list(exclude))
        emit(result, fmt)
    exit_with(result)
