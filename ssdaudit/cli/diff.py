"""``ssdaudit diff``: two checkpoints compared tensor by tensor."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from ssdaudit.cli.app import app, fail
from ssdaudit.cli.output import Format, check_output_path, cli_errors, emit, exit_with
from ssdaudit.core.errors import first_line


class MapMode(str, Enum):
    auto = "auto"
    none = "none"


@app.command()
def diff(
    a: Path = typer.Argument(..., help="First checkpoint: .pt/.pth/.bin/.tar, .safetensors, a directory of shards, or a torch.distributed.checkpoint (DCP) directory."),
    b: Path = typer.Argument(..., help="Second checkpoint, compared against the first."),
    rtol: float = typer.Option(0.0, "--rtol", min=0.0, help="Relative tolerance: tensors within it count as equal."),
    atol: float = typer.Option(0.0, "--atol", min=0.0, help="Absolute tolerance."),
    map_mode: MapMode = typer.Option(MapMode.auto, "--map", help="auto: pair keys across prefixes and naming schemes; none: equal names only."),
    write_mapped: Path = typer.Option(None, "--write-mapped", help="Write B's tensors under A's names to this file (.pth or .safetensors)."),
    top: int = typer.Option(10, "--top", min=1, help="How many changed tensors and renamed keys to list."),
    fmt: Format = typer.Option(Format.text, "--format", help="text, json, sarif (GitHub code scanning) or github (workflow annotations)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Unpickle files that hold Python objects (runs their code: only for files you trust)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for load errors."),
) -> None:
    """Compare two checkpoints: missing keys, shapes, dtypes, changed and unchanged tensors, NaN/Inf, file size.

    Files are read with torch.load(weights_only=True, mmap=True) or safetensors, one tensor at a time; DCP
    directories (torch.distributed.checkpoint.save, FSDP2) through DCP's reader, shards reassembled per tensor.

    Exit codes: 0 identical (within tolerance), 1 different, 2 unreadable, refused or not a checkpoint.

    Examples:

      ssdaudit diff run/epoch1.pth run/epoch30.pth

      ssdaudit diff ours.pth ssds_port.pth --map auto --write-mapped ported.pth

      ssdaudit diff model.safetensors shards/ --rtol 1e-3 --format json

      ssdaudit diff ckpt/step_1000/ model.pth    # a DCP directory against a torch.save file
    """
    with cli_errors(fmt is Format.json, debug):
        from ssdaudit.checkpoints.formats import open_checkpoint
        from ssdaudit.checkpoints.diff import diff_checkpoints, write_mapped as write_b

        if write_mapped is not None:
            check_output_path(write_mapped, inputs=(a, b))
        ca = open_checkpoint(a, trust_pickle)
        cb = open_checkpoint(b, trust_pickle)
        for c in (ca, cb):
            if c.trusted_pickle:
                typer.echo(f"warning: --trust-pickle: {c.path} was unpickled with weights_only=False, which runs any "
                           "code it contains", err=True)
        from ssdaudit.render.progress import progress_bar

        with progress_bar(ca.tensor_bytes + cb.tensor_bytes, "comparing", fmt is Format.text, in_bytes=True) as advance:
            report = diff_checkpoints(ca, cb, rtol, atol, map_mode.value, progress=advance and (lambda _key, n: advance(n)))
        if write_mapped is not None:
            if report.mapping is None or not report.mapping.pairs:
                fail("--write-mapped: no key of B could be paired with A (try --map auto)")
            try:
                n = write_b(cb, report.mapping, write_mapped)
            except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
                fail(f"cannot write {write_mapped}: {getattr(exc, 'strerror', None) or first_line(exc)} "
                      "(nothing was written; free space or choose another path)")
            typer.echo(f"wrote {n} tensors of B under A's names to {write_mapped}", err=True)
        emit(report, fmt, str(a), top=top)
    exit_with(report)
