"""``ssdaudit lint``: the static rules over Python source (nothing is imported or run), and their fixes."""

from __future__ import annotations

from pathlib import Path

import typer

from ssdaudit.cli.app import app, fail
from ssdaudit.cli.output import Format, cli_errors, emit, exit_with


def lint_help() -> str:
    """The command's help, its rule list read from the registry (a new rule appears here by itself)."""
    from ssdaudit.core.findings import RULES

    static = [r for r in RULES.values() if r.static]
    rules = "\n\n".join(f"  {r.code} {r.name}: {r.summary}" for r in static)
    return (
        "Static rules over Python source (nothing is imported or run): nn.Module classes (R) and training loops "
        "in functions and scripts (L).\n\n"
        f"Rules:\n\n{rules}\n\n"
        "Each rule has a page: docs/rules/<CODE>.md (or `ssdaudit rules CODE`). Silence one line with "
        "`# noqa: R001` or `# ssdaudit: ignore[R001]`.\n\n"
        "--fix applies the safe fixes (R001-R004 containers and buffers, R009) in place, atomically, keeping "
        "comments and formatting; --unsafe-fixes adds the others (R005's torch.nn.functional call, a persistent "
        "R004 buffer); --diff shows them as a unified diff and writes nothing.\n\n"
        "Exit codes: 0 clean, 1 findings (with --diff: fixes to apply), 2 a path that does not exist.\n\n"
        "Examples:\n\n"
        "  ssdaudit lint src/ models/\n\n"
        "  ssdaudit lint model.py --diff\n\n"
        "  ssdaudit lint model.py --fix\n\n"
        "  ssdaudit lint . --format github\n\n"
        "  ssdaudit lint model.py --format sarif > ssdaudit.sarif"
    )


@app.command(help=lint_help())
def lint(
    paths: list[Path] = typer.Argument(..., help="Python files or folders (searched recursively)."),
    ignore: str = typer.Option("", "--ignore", help="Rule codes to skip, comma-separated, e.g. R004."),
    exclude: list[Path] = typer.Option([], "--exclude", help="Files or folders read for context (base classes) but not reported; repeatable."),
    fix: bool = typer.Option(False, "--fix", help="Apply the safe fixes in place; report what is left."),
    diff: bool = typer.Option(False, "--diff", help="Print the fixes as a unified diff; write nothing."),
    unsafe_fixes: bool = typer.Option(False, "--unsafe-fixes", help="With --fix or --diff: the unsafe fixes too."),
    fmt: Format = typer.Option(Format.text, "--format", help="text, json, sarif or github."),
) -> None:
    with cli_errors(fmt is Format.json):
        from ssdaudit.core.findings import rule_codes
        from ssdaudit.lint.engine import lint_paths

        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            fail(f"no such file or folder: {missing[0]}")
        for p in paths:
            _check_lint_path(p)
        codes, unknown = rule_codes(ignore.split(","))
        if unknown:
            fail(f"unknown rule code {unknown[0]!r} in --ignore (see `ssdaudit rules`)")
        if fix and diff:
            fail("--fix and --diff: choose one (--diff writes nothing)")
        if unsafe_fixes and not (fix or diff):
            fail("--unsafe-fixes adds to --fix or --diff: pass one of them too (e.g. --diff --unsafe-fixes to look first)")
        absent = [str(p) for p in exclude if not p.exists()]
        if absent:
            fail(f"--exclude {absent[0]}: no such file or folder (a typo would exclude nothing)")
        result = lint_paths(list(paths), codes, list(exclude), fix=fix or diff, unsafe_fixes=unsafe_fixes,
                            write=not diff)
        if diff:
            typer.echo(result.diff, nl=False)
            raise typer.Exit(1 if result.diff else 0)
        emit(result, fmt)
    exit_with(result)


def _check_lint_path(path: Path) -> None:
    """Refuse what cannot be meant: a folder with no Python file in it (a lint of nothing would pass CI) or a file
    that is not source text (a checkpoint, an image)."""
    from ssdaudit.lint.engine import iter_python_files

    if path.is_dir():
        if not iter_python_files([path]):
            fail(f"no Python files under {path}: nothing to lint (give the folder with your .py files)")
        return
    try:
        with path.open("rb") as f:
            head = f.read(8192)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
    if b"\0" in head:
        fail(f"{path} is not Python source (it is binary: a checkpoint or other data?); lint .py files or folders")
    if path.suffix not in (".py", ".pyi") and not (head.startswith(b"#!") and b"python" in head.split(b"\n", 1)[0]):
        fail(f"{path} is not a Python file (.py, or a script whose first line is a python #!); lint .py files or "
             "folders")
