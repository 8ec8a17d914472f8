"""The workers of ``torch.multiprocessing.spawn`` / ``start_processes`` watched, for ``ssdaudit watch``.

A script written the way pytorch/examples' DDP tutorial is (``mp.spawn(main, args=(world_size,), nprocs=N)``, with
``init_process_group`` inside ``main``) trains only in the processes it starts. While the runner watches a script,
``start_processes`` has one layer (``ssdaudit.core.patches``; ``torch.multiprocessing.spawn`` calls it) that hands
the workers ``WatchedWorker(fn, plan)`` instead of ``fn``: a picklable wrapper (with the ``spawn`` start method the
function travels by name, as the user's own does) that, in the worker,

* runs ``fn(i, *args)`` under a ``Runner`` of its own, exactly as ``torchrun -m ssdaudit watch`` runs each rank:
  every optimizer watched, the same checks, cross-rank evidence through the process group's key-value store, rank
  0 merging what the others posted;
* ends the worker normally after the last watched step (the runner's stop is caught here: the worker returns
  ``None``, as ``fn`` would after its loop); anything ``fn`` raises or exits with passes through unchanged;
* writes its ``DoctorReport`` (whatever happened) to ``plan.folder`` (a file per worker, temp file + rename), where
  the parent's runner reads it (``worker_reports``) when its report is asked for: rank 0's report of each process
  group, or every worker's when they formed none.

With the ``fork`` start method the worker inherits the parent's patches: the parent runner's layers act only in the
process that made them (``Runner.pid``). Nothing here outlives the watch: the layer is released with the runner's.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import io
import os
import pickle
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from ssdaudit.core import patches
from ssdaudit.core.guard import guarded

if TYPE_CHECKING:
    from ssdaudit.training.doctor.report import DoctorReport


class Runner(Protocol):
    """What this module reads of ``runner.Runner`` (which imports this module: a protocol, not an import)."""

    steps: int
    every: int
    ignore: list[str]
    notes: list[str]
    pid: int
    watches: list[Any]
    worker_folder: str | None
    worker_runner: Any
    stop_exception: type[BaseException]

    def patched(self) -> contextlib.AbstractContextManager[Any]: ...

    def report(self, target: str) -> "DoctorReport": ...

# ``torch.multiprocessing.spawn`` calls the module's ``start_processes``; the package re-exports it
patches.register("torch.multiprocessing.spawn", "start_processes")
patches.register("torch.multiprocessing", "start_processes")

_SUFFIX = ".ssdaudit-worker"


@dataclass(frozen=True)
class WorkerPlan:
    """How each worker is watched: the runner's ``steps``, ``every`` and ``ignore``; ``folder``: where it writes its
    report; ``stdout``: where its prints go (None: unchanged, ``stderr``, or ``discard``)."""

    steps: int
    every: int
    ignore: tuple[str, ...]
    folder: str
    runner: Callable[[int, int, tuple[str, ...]], Any]  # the runner class (pickled by name): each worker builds one
    stop: type[BaseException]  # what that runner raises to end the script after its last step
    stdout: str | None = None


@dataclass(frozen=True)
class WorkerReport:
    """What one worker saw: its index among the started processes, its (rank, world size) in its process group
    ((0, 1) without one), and its diagnosis."""

    index: int
    rank: int
    world: int
    report: "DoctorReport"


class WatchedWorker:
    """``fn`` run with the doctor attached in a worker process: called as ``fn(i, *args)``, returns what it returns
    (``None`` when the watch stopped it after ``plan.steps`` steps), raises what it raises."""

    def __init__(self, fn: Callable[..., Any], plan: WorkerPlan) -> None:
        self.fn = fn
        self.plan = plan

    def __reduce__(self) -> tuple[Any, ...]:
        return (WatchedWorker, (self.fn, self.plan))

    def __call__(self, index: int, *args: Any) -> Any:
        plan = self.plan
        runner = plan.runner(plan.steps, plan.every, plan.ignore)
        try:
            with runner.patched(), _stdout(plan.stdout):
                return self.fn(index, *args)
        except plan.stop:
            return None
        finally:
            with guarded("ssdaudit watch: a worker's report", runner.notes):
                _write(runner, index, plan.folder)


@contextlib.contextmanager
def _stdout(where: str | None) -> Iterator[None]:
    if where is None:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr if where == "stderr" else io.StringIO()):
        yield


def _rank(runner: "Runner") -> tuple[int, int]:
    """(rank, world size) of the worker's process group; when the script destroyed it before the end, the board its
    cross-rank checks used tells."""
    from ssdaudit.training.doctor.ranks import world

    rank, size = world()
    if size > 1:
        return rank, size
    for w in runner.watches:
        for c in w.checks:
            board = getattr(c, "board", None)
            if board is not None and getattr(board, "size", 1) > 1:
                return int(board.rank), int(board.size)
    return rank, size


def _write(runner: "Runner", index: int, folder: str) -> None:
    """This worker's report to ``folder`` (rank 0 of a process group merges the other ranks' evidence here, waiting
    a short while at most: ``RankBoard``); written to a temp file and renamed."""
    if not runner.watches:
        return
    report = runner.report(f"worker {index}")
    rank, size = _rank(runner)
    try:
        data = pickle.dumps(WorkerReport(index, rank, size, report))
    except Exception:  # something a finding carries does not pickle: keep what says the finding
        report.findings = [replace(f, members={}, parts=()) for f in report.findings]
        data = pickle.dumps(WorkerReport(index, rank, size, report))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{index}-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, os.path.join(folder, f"{index}-{os.getpid()}{_SUFFIX}"))


def worker_reports(folder: str | None) -> list[WorkerReport]:
    """The reports the workers wrote to ``folder``, by index; a file that cannot be read is skipped."""
    if folder is None or not os.path.isdir(folder):
        return []
    found = []
    for path in sorted(glob.glob(os.path.join(folder, f"*{_SUFFIX}"))):
        try:
            with open(path, "rb") as f:
                item = pickle.load(f)  # written by our own workers into our private folder
        except Exception:
            continue
        if isinstance(item, WorkerReport):
            found.append(item)
    return sorted(found, key=lambda w: w.index)


def reporting(workers: list[WorkerReport]) -> list[WorkerReport]:
    """The reports that speak for the workers: rank 0's of a process group (it merged the others'), and the report
    of every worker that formed none; when rank 0 wrote none (it crashed), every report."""
    leaders = [w for w in workers if w.world > 1 and w.rank == 0]
    alone = [w for w in workers if w.world <= 1]
    return leaders + alone if leaders or alone else list(workers)


def watch_workers(runner: "Runner", stdout: str | None) -> contextlib.AbstractContextManager[Any]:
    """While the block runs, the functions handed to ``torch.multiprocessing.start_processes`` (and ``spawn``) are
    run as ``WatchedWorker`` s reporting to ``runner.worker_folder`` (made on first use)."""
    import torch.multiprocessing  # noqa: F401  # the package, and its spawn module
    spawn_module = sys.modules["torch.multiprocessing.spawn"]
    package = sys.modules["torch.multiprocessing"]

    def make(call_next: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call_next)
        def start_processes(*args: Any, **kwargs: Any) -> Any:
            if os.getpid() == runner.pid:
                with guarded("ssdaudit watch: watching spawned workers", runner.notes):
                    args, kwargs = _wrapped(runner, stdout, args, kwargs)
            return call_next(*args, **kwargs)

        return start_processes

    stack = contextlib.ExitStack()
    key = f"ssdaudit.workers.{id(runner):x}"
    for owner in (spawn_module, package):
        if hasattr(owner, "start_processes"):
            stack.enter_context(patches.patched(owner, "start_processes", make, key=key, compile_safe=False))
    return stack


def _wrapped(runner: "Runner", stdout: str | None, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``start_processes``'s arguments with its ``fn`` (first, or ``fn=``) wrapped."""
    fn = args[0] if args else kwargs.get("fn")
    if fn is None or isinstance(fn, WatchedWorker) or not callable(fn):
        return args, kwargs
    if runner.worker_folder is None:
        runner.worker_folder = tempfile.mkdtemp(prefix="ssdaudit-workers-")
    plan = WorkerPlan(runner.steps, runner.every, tuple(runner.ignore), runner.worker_folder,
                      runner.worker_runner, runner.stop_exception, stdout)
    worker = WatchedWorker(fn, plan)
    if args:
        return (worker, *args[1:]), kwargs
    return args, {**kwargs, "fn": worker}
