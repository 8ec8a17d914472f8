"""Atomic file writes: a temporary file in the target's folder, fsync, rename, fsync of the folder.

A crash (or a full disk) mid-write leaves the previous file intact, never a half-written one. The file gets the
mode an ordinary ``open()`` would give it (0666 minus the umask), not mkstemp's private 0600, so a teammate or a
serving process can read a checkpoint or a report.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; set straight back
    os.umask(mask)
    return mask


def temp_prefix(name: str) -> str:
    """Temporary files for ``name`` are ``.{name}.XXXX.tmp`` beside it (``stale_temp_files`` finds them)."""
    return f".{name}."


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then move it into place atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def stale_temp_files(folder: str | Path, names: tuple[str, ...]) -> list[Path]:
    """Temporary files that a killed ``atomic_write`` of one of ``names`` left in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for n in names for p in folder.glob(f"{temp_prefix(n)}*{TEMP_SUFFIX}"))
