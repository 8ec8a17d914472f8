"""The one place where results and failures leave the command line: output formats, exit codes, error lines.

Exit codes, the same for every command: 0 clean, 1 findings (``diff``: different), 2 a refusal (a ``UserError``:
bad input, one line on stderr), 3 an internal error (a bug of ours), 130 interrupted. ``Report.exit_code`` says 0
or 1; ``cli_errors`` turns failures into 2, 3 or 130.

``cli_errors`` prints a refusal as one line, as a JSON error document on stdout too under ``--format json``.
Anything unexpected is a bug of ours, not a refusal: it prints one "internal error" line with a pointer to
``--debug`` (JSON ``kind`` "internal") and exits 3, so that neither a script nor a test can mistake it for a
clean refusal (2) or for findings (1). With the environment variable ``SSDAUDIT_RAISE_INTERNAL=1`` (the test
suite sets it) the exception propagates with its traceback.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

import typer

from ssdaudit.core.errors import UsageError, UserError, first_line
from ssdaudit.core.report import Report

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class Format(str, Enum):
    """``--format``: the terminal view, one JSON document, SARIF 2.1.0, or GitHub workflow annotations."""

    text = "text"
    json = "json"
    sarif = "sarif"
    github = "github"


def error_document(message: str, kind: str, details: dict[str, Any] | None = None) -> str:
    """The JSON that ``--format json`` prints on stdout for an error; ``details`` (what the error carries besides
    its message, e.g. ``watch``'s diagnosis of the steps before the script failed) go beside ``error``."""
    return json.dumps({"error": {"message": message, "kind": kind}, **(details or {})}, indent=2)


@contextlib.contextmanager
def cli_errors(json_output: bool = False, debug: bool = False) -> Iterator[None]:
    """Exit 2 with one line (and a JSON error document when ``json_output``) for every failure; 130 on Ctrl-C."""
    import typer

    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt as exc:  # ``watch`` carries the diagnosis of the steps before the Ctrl-C (details)
        _report("interrupted", "interrupted", json_output, getattr(exc, "details", None))
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except UserError as exc:
        _debug(exc, debug)
        _report(str(exc), exc.kind, json_output, getattr(exc, "details", None))
        raise typer.Exit(EXIT_USAGE) from None
    except BrokenPipeError:  # `ssdaudit rules | head`: the reader left; say nothing more
        _silence_stdout()
        raise typer.Exit(EXIT_USAGE) from None
    except MemoryError as exc:
        _debug(exc, debug)
        _report("out of memory (a smaller --input-shape or --batch-size?)", "memory", json_output)
        raise typer.Exit(EXIT_USAGE) from None
    except Exception as exc:  # a bug of ours or an unforeseen input: one line, never a traceback by default
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in TORCH_EXTRA:
            _debug(exc, debug)
            _report(f"this command needs {exc.name}, which is not installed here: pip install 'ssdaudit[torch]' (or "
                    "install PyTorch your own way; `ssdaudit lint` and `ssdaudit rules` work without it)",
                    "missing-dependency", json_output)
            raise typer.Exit(EXIT_USAGE) from None
        if raise_internal():
            raise
        _debug(exc, debug)
        hint = "" if debug else "; run it again with --debug for the traceback"
        _report(f"internal error: {exc.__class__.__name__}: {first_line(exc)} (a bug in ssdaudit, please report it"
                f"{hint})", "internal", json_output)
        raise typer.Exit(EXIT_INTERNAL) from None


def check_output_path(out: Path, inputs: tuple[Path, ...] = (), flag: str = "--write-mapped") -> None:
    """Refuse an output file that would destroy an input or land nowhere the user meant.

    Raises:
        UsageError: ``out`` is one of ``inputs`` (or a file inside an input directory), is a directory, or its
            folder does not exist (a typo would otherwise create a folder tree silently).
    """
    target = out.expanduser().resolve()
    for given in inputs:
        source = given.expanduser().resolve()
        if target == source or (source.is_dir() and target.is_relative_to(source)):
            raise UsageError(f"{flag} {out}: that is an input ({given}); writing there would replace it: choose "
                             "another path")
    if target.is_dir():
        raise UsageError(f"{flag} {out}: is a directory; give a file path (.pth or .safetensors)")
    if not target.parent.is_dir():
        raise UsageError(f"{flag} {out}: the folder {out.parent} does not exist; create it first or choose another "
                         "path")


def raise_internal() -> bool:
    """Whether internal errors propagate with their traceback (``SSDAUDIT_RAISE_INTERNAL=1``; the tests set it)."""
    import os

    return os.environ.get("SSDAUDIT_RAISE_INTERNAL", "") not in ("", "0")


# What `pip install 'ssdaudit[torch]'` adds to the base install (which is enough for `lint`).
TORCH_EXTRA = ("torch", "torchvision", "torchinfo", "matplotlib", "numpy")


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush does not fail on the closed pipe again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _report(message: str, kind: str, json_output: bool, details: dict[str, Any] | None = None) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    if json_output:
        print(error_document(message, kind, details), flush=True)


def _debug(exc: BaseException, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)


def run_app(app: Callable[..., object]) -> None:
    """Run a CLI app. A bad flag, value or argument (typer/click's usage errors) is one ``error:`` line with a
    pointer to ``--help``, a JSON error document (kind "usage") under ``--format json``, and exit 2, like every
    other refusal. An exception that escaped ``cli_errors`` (only under ``SSDAUDIT_RAISE_INTERNAL``, or outside
    every command body) prints its traceback and exits 3, never 1, which means "findings"."""
    cx = _click_exceptions()
    try:
        code = app(standalone_mode=False)
    except cx.NoArgsIsHelpError as exc:  # `ssdaudit` or `ssdaudit watch` alone: the help
        print(exc.ctx.get_help() if exc.ctx is not None else str(exc))
        sys.exit(0)
    except cx.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        argv = sys.argv[1:]
        json_output = any(a == "--format=json" for a in argv) or any(
            a == "--format" and argv[k + 1:k + 2] == ["json"] for k, a in enumerate(argv))
        # click's message quotes the converter's ("Value error, 'gpu' is not one of ..."): drop that prefix
        message = exc.format_message().replace("Value error, ", "")
        _report(f"{message}{where}", "usage", json_output)
        sys.exit(EXIT_USAGE)
    except cx.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Exception:
        import traceback

        traceback.print_exc()
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)


def _click_exceptions() -> Any:
    """The module of the click exceptions the installed typer raises: recent typer vendors click
    (``typer._click``), earlier typer uses click itself."""
    import importlib

    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:
        return importlib.import_module("click.exceptions")


def console() -> Any:
    """A rich Console on stdout: colour only on a terminal (rich checks isatty itself; NO_COLOR is honoured)."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def emit(report: Report, fmt: Format, default_file: str | None = None, **text_options: Any) -> None:
    """Every report leaves the CLI here: one JSON document, SARIF, GitHub annotations, or the terminal view.
    ``default_file``: where SARIF and annotations point a finding that has no location of its own."""
    # The renderers import the report types, hence torch: only now, after the command has run.
    if fmt is Format.json:
        from ssdaudit.render.json import render_json

        typer.echo(render_json(report))
    elif fmt is Format.sarif:
        from ssdaudit import __version__
        from ssdaudit.render.sarif import render_sarif

        typer.echo(render_sarif(report.findings, __version__, default_file))
    elif fmt is Format.github:
        from ssdaudit.render.github import render_github

        text = render_github(report.findings, default_file)
        if text:
            typer.echo(text)
    else:
        from ssdaudit.render.terminal import render

        render(report, console(), **text_options)


def exit_with(report: Report, strict: bool = False) -> NoReturn:
    """End the command with the report's exit code (0 clean, 1 findings; see ``Report.exit_code``)."""
    raise typer.Exit(report.exit_code(strict))
