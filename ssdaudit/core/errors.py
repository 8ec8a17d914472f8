"""Expected failures: the exceptions every layer raises for a problem the user can fix, and the time budget.

Every mistake a user can make (a bad path, a corrupt or hostile checkpoint, a model file that exits or hangs,
a wrong configuration value) raises a ``UserError`` subclass with a one-line message naming the problem, the
file (and key or line) and what to do. ``ssdaudit.cli.output.cli_errors`` (used by both CLIs) prints it, as a JSON document on
stdout too when the output format is JSON, and exits 2. Anything unexpected is a bug of ours, not a refusal: it
prints one "internal error" line with a pointer to ``--debug`` (JSON ``kind`` "internal") and exits 3, so that
neither a script nor a test can mistake it for a clean refusal (2) or for findings (1). With the environment
variable ``SSDAUDIT_RAISE_INTERNAL=1`` (the test suite sets it) the exception propagates with its traceback.

``running_user_code`` wraps code from the user's model files: their prints go to stderr (so ``--format json``
stdout stays one JSON document), ``sys.exit`` becomes a load error, and a deadline stops a hang.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

DEFAULT_TIMEOUT_S = 300.0


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its class name when it has none), cut to ``limit`` characters:
    how every message here quotes a foreign error."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else exc.__class__.__name__)[:limit]


def a_type(obj: object) -> str:
    """"a dict", "an int": the indefinite article and the type name of ``obj``, for messages."""
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


class UserError(Exception):
    """A problem the user can fix; ``str()`` is the whole one-line message. ``kind`` names the class of problem."""

    kind = "error"


class ScriptError(UserError):
    """The user's training script failed (raised, or exited with a non-zero status) under ``ssdaudit watch``.
    ``report``: the diagnosis of the steps that ran before it failed (often the cause of the failure), or None."""

    kind = "script"

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report

    @property
    def details(self) -> dict[str, Any] | None:
        """What the JSON error document carries besides the message: the diagnosis so far."""
        return {"report": self.report.to_dict()} if self.report is not None else None


class ScriptInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) while ``ssdaudit watch`` ran the user's script: still an interruption (exit 130), carrying
    ``report``, the diagnosis of the steps that ran before it, or None."""

    def __init__(self, report: Any = None) -> None:
        super().__init__("interrupted")
        self.report = report

    @property
    def details(self) -> dict[str, Any] | None:
        """What the JSON error document carries besides the message: the diagnosis so far."""
        return {"report": self.report.to_dict()} if self.report is not None else None


class UsageError(UserError):
    """A bad flag, value or combination on the command line."""

    kind = "usage"


class LoadError(UserError):
    """A target, reference or checkpoint could not be loaded; the message is one line for the user."""

    kind = "load"


class TimeLimitExceeded(LoadError):
    """The target's code ran past the ``--timeout`` budget."""

    kind = "timeout"


class Deadline:
    """One time budget for all phases of running a target (import, build, probe). ``phase(name)`` arms a
    SIGALRM timer for what is left of the budget; the message names the phase that ran out. Without a main
    thread or SIGALRM (Windows) there is no timer, and the phases run unbounded."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.started = time.monotonic()

    def left(self) -> float | None:
        return None if self.seconds is None else self.seconds - (time.monotonic() - self.started)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        left = self.left()
        if left is None or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
            yield
            return
        if left <= 0:
            raise TimeLimitExceeded(self._message(name))

        def expire(_signum: int, _frame: object) -> None:
            raise TimeLimitExceeded(self._message(name))

        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def _message(self, phase: str) -> str:
        return (f"{phase} ran past the time limit of {self.seconds:.3g} s (an endless loop in the model's code?); "
                "raise it with --timeout SECONDS (or timeout = N under [tool.ssdaudit])")


@contextlib.contextmanager
def running_user_code(phase: str, deadline: Deadline | None = None) -> Iterator[None]:
    """Run the user's model code: prints to stderr, ``sys.exit`` -> ``LoadError``, bounded by ``deadline``."""
    with contextlib.redirect_stdout(sys.stderr), (deadline.phase(phase) if deadline is not None else contextlib.nullcontext()):
        try:
            yield
        except SystemExit as exc:
            raise LoadError(f"{phase}: the model's code called sys.exit({exc.code!r}); a model file must not end the "
                            "process (move that call under `if __name__ == \"__main__\":`)") from None


class ProbeError(UserError, RuntimeError):
    """The model's forward pass failed on the probe input (a bad ``--input-shape``, or a bug in the model)."""

    kind = "probe"


class ConfigError(UserError):
    """A bad ``[tool.ssdaudit]`` value: the message names the file, the key and what is allowed."""

    kind = "config"
