"""``ssdaudit check``: the CI gate configured in pyproject.toml."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ssdaudit.cli.app import app, fail
from ssdaudit.cli.output import Format, cli_errors, emit, exit_with


@app.command()
def check(
    config: Path = typer.Option(Path("pyproject.toml"), "--config", help="The file with [tool.ssdaudit]."),
    baseline: Path = typer.Option(None, "--baseline", help="Findings recorded here are known: reported, not failing."),
    write_baseline: bool = typer.Option(False, "--write-baseline", help="Record the current findings in --baseline (or the configured file) and exit 0."),
    fmt: Format = typer.Option(Format.text, "--format", help="text, json, sarif or github."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for configuration and load errors."),
) -> None:
    """The CI gate: lint the configured paths, then audit each configured model against its expectations.

    Configuration (pyproject.toml):

    \b
      [tool.ssdaudit]
      lint = ["src/"]
      exclude = ["src/legacy.py"]   # read for context, not reported
      ignore = ["R004"]
      [[tool.ssdaudit.models]]
      target = "models/net.py:build"
      reference = "ssds-voc"      # counts must match
      params = 4_577_792          # expected registered parameters
      tolerance = 0.0             # relative
      max_checkpoint_mb = 20
      gradflow_steps = 2          # run the gradflow probe too
      expect = "fail"             # a known-bad demonstration that must keep failing

    Exit codes: 0 everything holds, 1 a new error finding or a broken expectation, 2 a configuration or load problem.

    Examples:

      ssdaudit check

      ssdaudit check --baseline .ssdaudit-baseline.json --write-baseline

      ssdaudit check --format sarif > ssdaudit.sarif
    """
    with cli_errors(fmt is Format.json, debug):
        from ssdaudit.gate.check import read_baseline, run_check
        from ssdaudit.gate.check import write_baseline as write_file
        from ssdaudit.gate.config import load_config

        cfg = load_config(config)
        base_path = baseline or (cfg.root / cfg.baseline if cfg.baseline else None)
        known = read_baseline(base_path) if base_path is not None and not write_baseline else set()
        if write_baseline and base_path is None:
            fail("--write-baseline needs --baseline FILE (or baseline = \"FILE\" in [tool.ssdaudit])")
        if fmt is Format.text and sys.stderr.isatty():
            from rich.console import Console

            status = Console(stderr=True, highlight=False)
        else:
            status = None
        report = run_check(cfg, known, progress=(lambda msg: status.print(f"[dim]{msg}...[/]")) if status else None)
        if write_baseline and base_path is not None:
            gating = [f for row in report.rows if row.expect == "pass" for f in row.findings]
            n = write_file(base_path, gating)
            typer.echo(f"wrote {n} known findings to {base_path}")
            raise typer.Exit(0)
        emit(report, fmt)
    exit_with(report)
