"""``python -m ssdaudit``: the command line."""

from ssdaudit.cli.main import main

main()
