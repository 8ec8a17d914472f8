"""The ``ssdaudit`` command line (typer): ``app`` and the console script's ``main``, one module per command, and
the helpers that the ``ssdlite`` command line shares with it (error handling, exit codes, progress bars)."""

from ssdaudit.cli.app import app
from ssdaudit.cli.main import main
from ssdaudit.cli.output import TORCH_EXTRA, cli_errors, run_app
from ssdaudit.render.progress import new_progress

__all__ = ["app", "main", "cli_errors", "run_app", "TORCH_EXTRA", "new_progress"]
