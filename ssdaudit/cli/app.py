"""The typer application every ``ssdaudit`` command registers on, and the options several commands share.

Heavy modules (torch) are imported inside commands, so ``--help`` is instant.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

import typer

from ssdaudit.core.errors import UsageError

app = typer.Typer(
    help="Find the parameters a PyTorch model uses but never registers.\n\n"
    "Rules: `ssdaudit rules`; each has a page in docs/rules/<CODE>.md.\n\n"
    "Examples:\n\n"
    "  ssdaudit gradflow examples/buggy_plain_list.py --steps 2 --out out/gradflow\n\n"
    "  ssdaudit diff run/epoch1.pth run/epoch30.pth\n\n"
    "  ssdaudit lint src/ --format github\n\n"
    "  ssdaudit check            # the CI gate configured in pyproject.toml\n\n"
    "  ssdaudit params examples/buggy_plain_list.py --reference ssds-voc\n\n"
    "  ssdaudit params mypkg.models:build --input-shape 1,3,224,224 --format json\n\n"
    "  ssdaudit params checkpoint.pth",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)



class Device(str, Enum):
    cpu = "cpu"
    meta = "meta"


def _version(value: bool) -> None:
    if value:
        from ssdaudit import __version__

        typer.echo(f"ssdaudit {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """ssdaudit: PyTorch parameter audits."""


def fail(message: str) -> NoReturn:
    """A user mistake: one line on stderr (and a JSON error document under --format json), exit 2."""
    raise UsageError(message)


def parse_shape(text: str, flag: str = "--input-shape") -> tuple[int, ...]:
    from ssdaudit.registration.pipeline import check_input_shape

    try:
        shape = tuple(int(x) for x in text.replace("x", ",").split(",") if x.strip())
    except ValueError:
        shape = ()
    if not shape:
        fail(f"bad {flag} {text!r}: give positive integers like 1,3,300,300")
    return check_input_shape(shape, flag)


def timeout_option() -> Any:
    from ssdaudit.core.errors import DEFAULT_TIMEOUT_S

    return typer.Option(DEFAULT_TIMEOUT_S, "--timeout", min=0.0, help="Seconds allowed for importing, building and probing the "
                        "target (0: no limit); a model file that hangs stops with exit 2.")




