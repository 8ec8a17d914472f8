"""``ssdaudit rules``: the rule catalogue, or one rule explained."""

from __future__ import annotations

import typer

from ssdaudit.cli.app import app, fail
from ssdaudit.cli.output import Format, cli_errors


@app.command()
def rules(
    code: str = typer.Argument(None, help="A rule code, e.g. R001; all rules when omitted."),
    fmt: Format = typer.Option(Format.text, "--format", metavar="<text|json>",
                              help="text or json."),
) -> None:
    """List the rules (code, name, summary) or explain one: why it matters, the fix, its docs page.

    Exit codes: 0 listed, 2 an unknown code or a format this command does not offer.

    Examples:

      ssdaudit rules G001

      ssdaudit rules --format json
    """
    from ssdaudit.core.findings import RULES

    with cli_errors(fmt is Format.json):
        if fmt not in (Format.text, Format.json):
            fail(f"--format {fmt.value}: `ssdaudit rules` prints text or json (sarif and github are for findings)")
        if code is not None and code.upper() not in RULES:
            fail(f"unknown rule {code!r}: run `ssdaudit rules` for the list")
        chosen = [RULES[code.upper()]] if code is not None else list(RULES.values())
        if fmt is Format.json:
            from ssdaudit.render.json import render_json

            typer.echo(render_json({"rules": [r.to_dict() for r in chosen]}))
        elif code is None:
            for r in chosen:
                typer.echo(f"{r.code}  {r.name:<26} {r.severity.value:<8} {r.summary}")
        else:
            r = chosen[0]
            typer.echo(f"{r.code} {r.name} ({r.severity.value}): {r.summary}\n\nwhy: {r.why}\nfix: {r.fix}\ndocs: {r.docs}")
