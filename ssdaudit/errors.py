"""Expected failures, and the one place that turns them into ``error: ...`` and exit code 2.

Every mistake a user can make (a bad path, a corrupt or hostile checkpoint, a model file that exits or hangs,
a wrong configuration value) raises a ``UserError`` subclass with a one-line message naming the problem, the
file (and key or line) and what to do. ``cli_errors`` (used by both CLIs) prints it, as a JSON document on
stdout too when the output format is JSON, and exits 2. Anything unexpected is a bug of ours, not a refusal: it
prints one "internal error" line with a pointer to ``--debug`` (JSON ``kind`` "internal") and exits 3, so that
neither a script nor a test can mistake it for a clean refusal (2) or for findings (1). With the environment
variable ``SSDAUDIT_RAISE_INTERNAL=1`` (the test suite sets it) the exception propagates with its traceback.

``running_user_code`` wraps code from the user's model files: their prints go to stderr (so ``--format json``
stdout stays one JSON document), ``sys.exit`` becomes a load error, and a deadline stops a hang.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
DEFAULT_TIMEOUT_S = 300.0


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its class name when it has none), cut to ``limit`` characters:
    how every message here quotes a foreign error."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else exc.__class__.__name__)[:limit]


class UserError(Exception):
    """A problem the user can fix; ``str()`` is the whole one-line message. ``kind`` names the class of problem."""

    kind = "error"


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
        return (f"{phase} ran past the time limit of {self.seconds:g} s (an endless loop in the model's code?); "
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


def error_document(message: str, kind: str) -> str:
    """The JSON that ``--format json`` prints on stdout for an error."""
    return json.dumps({"error": {"message": message, "kind": kind}}, indent=2)


@contextlib.contextmanager
def cli_errors(json_output: bool = False, debug: bool = False) -> Iterator[None]:
    """Exit 2 with one line (and a JSON error document when ``json_output``) for every failure; 130 on Ctrl-C."""
    import typer

    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        _report("interrupted", "interrupted", json_output)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except UserError as exc:
        _debug(exc, debug)
        _report(str(exc), exc.kind, json_output)
        raise typer.Exit(EXIT_USAGE) from None
    except BrokenPipeError:  # `ssdaudit rules | head`: the reader left; say nothing more
        _silence_stdout()
        raise typer.Exit(EXIT_USAGE) from None
    except MemoryError as exc:
        _debug(exc, debug)
        _report("out of memory (a smaller --input-shape or --batch-size?)", "memory", json_output)
        raise typer.Exit(EXIT_USAGE) from None
    except Exception as exc:  # a bug of ours or an unforeseen input: one line, never a traceback by default
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in TORCH_EXTRA:
            _debug(exc, debug)
            _report(f"this command needs {exc.name}, which is not installed here: pip install 'ssdaudit[torch]' (or "
                    "install PyTorch your own way; `ssdaudit lint` and `ssdaudit rules` work without it)",
                    "missing-dependency", json_output)
            raise typer.Exit(EXIT_USAGE) from None
        if raise_internal():
            raise
        _debug(exc, debug)
        hint = "" if debug else "; run it again with --debug for the traceback"
        _report(f"internal error: {exc.__class__.__name__}: {first_line(exc)} (a bug in ssdaudit, please report it"
                f"{hint})", "internal", json_output)
        raise typer.Exit(EXIT_INTERNAL) from None


def raise_internal() -> bool:
    """Whether internal errors propagate with their traceback (``SSDAUDIT_RAISE_INTERNAL=1``; the tests set it)."""
    import os

    return os.environ.get("SSDAUDIT_RAISE_INTERNAL", "") not in ("", "0")


# What `pip install 'ssdaudit[torch]'` adds to the base install (which is enough for `lint`).
TORCH_EXTRA = ("torch", "torchvision", "torchinfo", "matplotlib", "numpy")


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush does not fail on the closed pipe again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _report(message: str, kind: str, json_output: bool) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    if json_output:
        print(error_document(message, kind), flush=True)


def _debug(exc: BaseException, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)


def run_app(app: "Callable[[], object]") -> None:
    """Run a CLI app; an exception that escaped ``cli_errors`` (only under ``SSDAUDIT_RAISE_INTERNAL``, or outside
    every command body) prints its traceback and exits 3, never 1, which means "findings"."""
    try:
        app()
    except Exception:
        import traceback

        traceback.print_exc()
        sys.exit(EXIT_INTERNAL)
