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
    help="Find why a PyTorch model trains but does not learn: parameters it uses but never registers, gradients "
    "that never reach them, checkpoints that do not hold them, and the silent errors of a training loop.\n\n"
    "Rules: `ssdaudit rules`; each has a page in docs/rules/<CODE>.md.\n\n"
    "Examples:\n\n"
    "\b\n"
    "  ssdaudit params model.py                 # registered vs used parameters\n"
    "  ssdaudit params torchvision:resnet18 --format json\n"
    "  ssdaudit watch -- python train.py        # diagnose your own training loop\n"
    "  ssdaudit gradflow model.py --steps 2     # which parameters get gradients\n"
    "  ssdaudit diff run/epoch1.pth run/epoch30.pth\n"
    "  ssdaudit lint src/ --fix                 # static rules, with fixes\n"
    "  ssdaudit check                           # the CI gate configured in pyproject.toml",
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
        shape = tuple(int(x) for x in text.replace("x", ",").split(","))  # "1,,3" is a typo, not (1, 3)
    except ValueError:
        shape = ()
    if not shape:
        fail(f"bad {flag} {text!r}: give positive integers like 1,3,300,300")
    return check_input_shape(shape, flag)


def timeout_option() -> Any:
    from ssdaudit.core.errors import DEFAULT_TIMEOUT_S

    return typer.Option(DEFAULT_TIMEOUT_S, "--timeout", min=0.0, help="Seconds allowed for importing, building and probing the "
                        "target (0: no limit); a model file that hangs stops with exit 2.")




