"""Progress bars: one look for both CLIs (on stderr, on a terminal only), built here and nowhere else."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any


def new_progress(in_bytes: bool = False, info: bool = False, transient: bool = True) -> Any:
    """A ``rich.progress.Progress`` on stderr: bytes with speed and time left, or counts with elapsed and remaining
    time; ``info`` adds a free-text column (``{task.fields[info]}``)."""
    from rich import progress as rp
    from rich.console import Console

    counts = ((rp.DownloadColumn(), rp.TransferSpeedColumn(), rp.TimeRemainingColumn()) if in_bytes
              else (rp.MofNCompleteColumn(), rp.TimeElapsedColumn(), rp.TimeRemainingColumn()))
    extra = (rp.TextColumn("{task.fields[info]}"),) if info else ()
    return rp.Progress(rp.TextColumn("[bold]{task.description}"), rp.BarColumn(), *counts, *extra,
                       console=Console(stderr=True), transient=transient)


@contextlib.contextmanager
def progress_bar(total: int, label: str, enabled: bool = True, in_bytes: bool = False) -> Iterator[Callable[..., None] | None]:
    """A transient bar for one job; yields ``advance(n=1)``, or None when not shown (not a terminal, disabled, or
    fewer than 64 MiB of bytes: too quick to be worth a bar)."""
    if not enabled or not sys.stderr.isatty() or (in_bytes and total < 64 * 2**20):
        yield None
        return
    with new_progress(in_bytes) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n=1: bar.advance(task, n)
