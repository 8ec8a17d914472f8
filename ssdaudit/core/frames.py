"""The one definition of "library code" and of "the user's frame".

Library code is a file under ssdaudit itself, torch, the standard library or the installed packages
(``site-packages``), or code without a file (``<string>``, ``<frozen ...>``). The user's frame is the innermost
Python frame outside library code: the ``loss.backward()``, ``optimizer.step()`` or loss call of the user's loop that
led into a hook, the line that built a module, the variable that holds a model. Imports no torch (its folder is
found without importing it).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType

from ssdaudit.core.findings import Location


@functools.lru_cache(maxsize=1)
def library_dirs() -> tuple[str, ...]:
    """The folders of library code, resolved, each ending in a separator."""
    dirs = {str(Path(__file__).resolve().parents[1])}  # the ssdaudit package
    spec = importlib.util.find_spec("torch") if "torch" not in sys.modules else None
    torch_file = getattr(sys.modules.get("torch"), "__file__", None) or getattr(spec, "origin", None)
    if torch_file:
        dirs.add(str(Path(torch_file).resolve().parent))
    dirs.update(p for k in ("stdlib", "platstdlib", "purelib", "platlib") if (p := sysconfig.get_paths().get(k, "")))
    return tuple(sorted({str(Path(d).resolve()) + os.sep for d in dirs}))


@functools.lru_cache(maxsize=4096)
def is_library(filename: str) -> bool:
    """Whether code in ``filename`` (a code object's ``co_filename``) is library code."""
    if not filename or filename.startswith("<"):
        return True
    resolved = os.path.realpath(filename)
    return resolved.startswith(library_dirs()) or f"{os.sep}site-packages{os.sep}" in resolved \
        or f"{os.sep}dist-packages{os.sep}" in resolved


def user_frames(frame: FrameType | None = None) -> Iterator[FrameType]:
    """The frames of the user's code from ``frame`` (default: the caller's) outwards, innermost first."""
    frame = frame if frame is not None else sys._getframe(1)
    while frame is not None:
        if not is_library(frame.f_code.co_filename):
            yield frame
        frame = frame.f_back


def user_frame(frame: FrameType | None = None) -> FrameType | None:
    """The innermost frame of the user's code from ``frame`` (default: the caller's) outwards, else None (a hook run
    by an autograd device thread, a library's own training loop)."""
    return next(user_frames(frame if frame is not None else sys._getframe(1)), None)


def shown_path(filename: str) -> str:
    """``filename`` relative to the working directory when it lies below it, else as given."""
    try:
        return str(Path(filename).resolve().relative_to(Path.cwd()))
    except ValueError:
        return filename


def user_location(frame: FrameType | None = None) -> Location | None:
    """``Location(file, line)`` of ``user_frame(frame)``, the file relative to the working directory when below it."""
    found = user_frame(frame if frame is not None else sys._getframe(1))
    return Location(shown_path(found.f_code.co_filename), found.f_lineno) if found is not None else None


def user_traceback_entry(tb: TracebackType | None) -> tuple[str, int] | None:
    """(file, line) of the innermost traceback entry in the user's code (where a script's exception was raised)."""
    found: tuple[str, int] | None = None
    while tb is not None:
        if not is_library(tb.tb_frame.f_code.co_filename):
            found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found
