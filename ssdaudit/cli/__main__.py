"""``python -m ssdaudit.cli``: the command line (as ``python -m ssdaudit``)."""

from ssdaudit.cli.main import main

main()
