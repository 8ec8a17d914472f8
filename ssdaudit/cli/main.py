"""The console script: the app with every command registered."""

from __future__ import annotations

# Each command module registers its command on the app when imported.
import ssdaudit.cli.check
import ssdaudit.cli.diff
import ssdaudit.cli.gradflow
import ssdaudit.cli.lint
import ssdaudit.cli.params
import ssdaudit.cli.resume
import ssdaudit.cli.rules
import ssdaudit.cli.watch  # noqa: F401
from ssdaudit.cli.app import app
from ssdaudit.cli.output import run_app


def main() -> None:
    """``ssdaudit``: internal errors exit 3 (``cli_errors``), even when ``SSDAUDIT_RAISE_INTERNAL`` lets them
    propagate with their traceback."""
    run_app(app)


if __name__ == "__main__":
    main()
