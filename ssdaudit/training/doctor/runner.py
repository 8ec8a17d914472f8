"""``ssdaudit watch -- python train.py ARGS``: the user's script run in-process, every optimizer it builds watched.

``Optimizer.__init__`` is wrapped for the run (a layer of ``ssdaudit.core.patches``, run outside ``torch.compile``:
a script may build its optimizer inside a compiled function): each optimizer gets a ``Watch`` as soon as it is
built, on the model found from its parameters (the outermost module that holds the most of them: among the user's
variables first, else among all live modules). After ``steps``
optimizer steps a private ``BaseException`` raised from a step post-hook ends the script (``except Exception`` in
the script does not catch it; its ``finally`` blocks run). Loads with ``strict=False`` made before the optimizer
existed are replayed into it (``ssdaudit.training.loads``: the record starts before the script does), and so are
eval-mode forwards on uninitialised lazy state (T023, ``early_forwards``). The script's output passes through.
The workers a script starts with ``torch.multiprocessing.spawn`` / ``start_processes`` are watched too, each by a
runner of its own (``ssdaudit.training.doctor.spawned``); their reports join this process's.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import os
import runpy
import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any, TextIO

import torch
from torch import nn

from ssdaudit.core import patches
from ssdaudit.core.errors import ScriptError, ScriptInterrupted, UsageError, first_line
from ssdaudit.core.script_command import ScriptCommand, parse_command
from ssdaudit.core.findings import rule_codes
from ssdaudit.core.frames import user_frames, user_traceback_entry
from ssdaudit.core.guard import guarded
from ssdaudit.training.doctor import taps
from ssdaudit.training.doctor.context import unwrap_compiled
from ssdaudit.training.doctor.report import DoctorReport
from ssdaudit.training.doctor.checks.nonfinite import FirstNonFinite
from ssdaudit.training.doctor.early_forwards import EarlyForwards, clear_early_forwards, record_early_forwards
from ssdaudit.training.doctor.spawned import WorkerReport, reporting, watch_workers, worker_reports
from ssdaudit.training.doctor.watch import Watch, describe


class StopScript(BaseException):
    """Raised from a step post-hook after the last watched step: ends the user's script without an error."""


@contextlib.contextmanager
def _warning_filters(options: tuple[str, ...]) -> Iterator[None]:
    """The script's ``-W`` options as warnings filters for the run (``python -W``'s syntax), removed after. Raises
    ``UsageError`` for a filter Python would refuse."""
    if not options:
        yield
        return
    import warnings

    with warnings.catch_warnings():
        for option in options:
            try:
                warnings._setoption(option)  # type: ignore[attr-defined]  # the parser python -W uses
            except warnings._OptionError as exc:
                raise UsageError(f"-W {option}: {exc}") from None
        yield


patches.register("torch.optim.optimizer.Optimizer", "__init__")


def _best(modules: Iterable[nn.Module], ids: set[int]) -> tuple[int, nn.Module] | None:
    """(count, module): the outermost of ``modules`` holding the most of the parameters ``ids``."""
    unique = list({id(m): m for m in modules}.values())
    children = {id(c) for m in unique for c in m.children()}
    best: tuple[int, nn.Module] | None = None
    for m in unique:
        if id(m) in children:
            continue
        held = sum(id(p) in ids for p in m.parameters())
        if held and (best is None or held > best[0]):
            best = (held, m)
    return best


def find_model(params: Iterable[torch.Tensor]) -> nn.Module | None:
    """The outermost module holding the most of ``params`` (by identity), or None; a compiled model
    (``torch.compile``) is named by the module it wraps. Looks in the user's variables first (the frames outside
    library code: ``opt = Adam(model.parameters())`` has ``model`` at hand), and scans the garbage collector's
    objects only when no variable holds all of them (once per optimizer)."""
    ids = {id(p) for p in params}
    # type(), not isinstance(): isinstance reads __class__, which some lazy proxies answer with a warning
    near = [v for frame in itertools.islice(user_frames(sys._getframe(1)), 8) for scope in (frame.f_locals, frame.f_globals)
            for v in list(scope.values()) if issubclass(type(v), nn.Module)]
    best = _best(near, ids)
    if best is None or best[0] < len(ids):
        best = _best((o for o in gc.get_objects() if issubclass(type(o), nn.Module)), ids)
    return unwrap_compiled(best[1]) if best is not None else None


def _user_name(obj: object) -> str:
    """The name the user's code (the innermost frame outside library code) binds ``obj`` (or a compiled wrapper of
    it) to, else ""."""
    if obj is None:
        return ""
    frame = next(user_frames(sys._getframe(1)), None)
    if frame is None:
        return ""
    for scope in (frame.f_locals, frame.f_globals):
        for key, value in scope.items():
            if (value is obj or unwrap_compiled(value) is obj) and not key.startswith("_"):
                return key
    return ""


class Runner:
    """Attach a ``Watch`` to every optimizer built while ``patched()`` is active; stop after ``steps`` steps."""

    stop_exception: type[BaseException] = StopScript  # raised from a step post-hook after the last step
    worker_runner: "type[Runner]"  # what watches a spawned worker (``spawned``): a plain Runner, set below

    def __init__(self, steps: int = 20, every: int = 1, ignore: Iterable[str] = (),
                 trace_at: dict[int, int] | None = None) -> None:
        if steps < 1:
            raise UsageError("--steps must be at least 1")
        self.steps = steps
        self.every = every
        self.ignore = list(ignore)
        self.watches: list[Watch] = []
        self.notes: list[str] = []  # internal errors outside any watch
        self.trace_at = dict(trace_at or {})  # watch number (0-based) -> the step to trace (a re-run, F002)
        self.pid = os.getpid()  # a worker forked from this process inherits our patches: they act here only
        # the workers of torch.multiprocessing.spawn (``spawned``): where they write their reports, what they wrote,
        # and where their prints go (None: unchanged, "stderr", "discard")
        self.worker_folder: str | None = None
        self.worker_stdout: str | None = None
        self._workers: list[WorkerReport] | None = None
        self._early: EarlyForwards | None = None  # eval forwards before the first optimizer (T023), while recorded
        _, unknown = rule_codes(self.ignore)
        if unknown:
            raise UsageError(f"unknown rule codes in ignore: {', '.join(unknown)}")

    def _on_optimizer(self, opt: torch.optim.Optimizer) -> None:
        if any(w.optimizer is opt for w in self.watches):
            return
        params = [p for g in opt.param_groups for p in g["params"]]
        model = find_model(params)
        w = Watch(model, opt, every=self.every, ignore=self.ignore)
        at = self.trace_at.get(len(self.watches), 0)
        for c in w.checks:
            if isinstance(c, FirstNonFinite):
                c.trace_at = at
        w.attach()  # replays earlier loads and early eval forwards (T023)
        if self._early is not None:  # the watch's own check follows forwards from now on
            self._early.release()
        self.watches.append(w)
        name = _user_name(model) or (type(model).__name__ if model is not None else "")
        w.ctx.label = describe(opt, name, len(self.watches))

        def stop(_opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
            if w.steps >= self.steps or self.rounds() >= self.steps:
                raise StopScript()

        opt.register_step_post_hook(patches.compile_disabled(stop))

    def optimizers_seen(self) -> contextlib.AbstractContextManager[object]:
        """The layer over ``Optimizer.__init__`` that hands every optimizer built to ``_on_optimizer``."""
        runner = self

        def make(call_next: Any) -> Any:
            @functools.wraps(call_next)
            def __init__(opt: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> None:
                call_next(opt, *args, **kwargs)
                if os.getpid() != runner.pid:  # a forked worker: its own runner (``spawned``) watches there
                    return
                with guarded("ssdaudit watch: attaching to a new optimizer", runner.notes):
                    runner._on_optimizer(opt)

            return __init__

        return patches.patched(torch.optim.Optimizer, "__init__", make, key=f"ssdaudit.runner.{id(self):x}")

    def attached(self) -> int:
        """How many optimizers this runner has attached to."""
        return len(self.watches)

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        # torch.save/DCP save observed: what checkpoints lack (S008, S009)
        from ssdaudit.training.resume import patches as save_patches
        from ssdaudit.training.resume.contents import SaveCheck

        saves = save_patches.observing(SaveCheck(self))
        saves.__enter__()
        taps.install()  # the taps, and the record of loads, from before the script's first line
        clear_early_forwards()
        self._early = record_early_forwards()  # ... and of eval forwards on lazy state, until the first watch
        try:
            with self.optimizers_seen(), watch_workers(self, self.worker_stdout):
                yield
        finally:
            self._early.release()
            for w in self.watches:
                w.detach()
            taps.uninstall()
            saves.__exit__(None, None, None)  # after the taps: both wrap GradScaler.scale, restored in reverse

    def rounds(self) -> int:
        """Training steps so far across every optimizer: the steps of all of them, divided by how many step together
        (a GAN's two optimizers make one step per round; an optimizer built per fold continues the count)."""
        return rounds_of([w.steps for w in self.watches])

    def workers(self) -> list[WorkerReport]:
        """The reports of the spawned workers that speak for them (``spawned.reporting``), read once the script has
        ended (its workers are joined by then); empty when it spawned none."""
        if self._workers is None:
            self._workers = reporting(worker_reports(self.worker_folder))
        return self._workers

    def close_workers(self) -> None:
        """Read the workers' reports (if not yet) and remove their folder."""
        if self.worker_folder is not None:
            self.workers()
            shutil.rmtree(self.worker_folder, ignore_errors=True)
            self.worker_folder = None

    def report(self, target: str) -> DoctorReport:
        """The diagnosis of every watch of this process and of the spawned workers (rank 0 of each process group
        speaks for its ranks)."""
        findings = [f for w in self.watches for f in w.findings()]
        first: dict[str, int] = {}
        for w in self.watches:
            for code, step in w.first_step.items():
                first[code] = min(step, first.get(code, step))
        errors = [*self.notes, *(e for w in self.watches for e in w.ctx.internal_errors)]
        notes = [n for w in self.watches for n in w.ctx.notes]
        series = [w.series() for w in self.watches]
        steps = self.rounds()
        seen = {(f.rule, f.path, f.subject) for f in findings}
        for worker in self.workers():
            part = worker.report
            steps = max(steps, part.steps)
            for f in part.findings:  # workers without a process group may each name the same thing
                if (f.rule, f.path, f.subject) not in seen:
                    seen.add((f.rule, f.path, f.subject))
                    findings.append(f)
            for code, step in part.first_step.items():
                first[code] = min(step, first.get(code, step))
            errors += [e for e in part.internal_errors if e not in errors]
            notes += [n for n in part.notes if n not in notes]
            series += part.series
        return DoctorReport(target, steps, findings, first, errors, notes, series=series)


Runner.worker_runner = Runner


def rounds_of(counts: list[int]) -> int:
    """Training rounds from the step counts of every optimizer: their sum divided by how many step together (within
    one step of the most advanced); a round that has begun counts. 0 with no optimizer."""
    if not counts:
        return 0
    top = max(counts)
    together = sum(1 for c in counts if c >= top - 1)
    return -(-sum(counts) // together)


def run_watched(command: list[str], steps: int = 20, every: int = 1, ignore: Iterable[str] = (),
                script_stdout: TextIO | None = None, runner: Runner | None = None) -> DoctorReport:
    """Run ``command`` (``python train.py ARGS`` or ``python -m module ARGS``) in this process with every optimizer
    watched, for at most ``steps`` optimizer steps; the diagnosis. When the first non-finite gradient came from code
    the doctor could not replay (a loss function outside any module), the script is run a second time, up to that
    step, with the op-level trace armed on it (its output discarded), and the operation found replaces the unplaced
    finding. ``script_stdout``: where the script's prints go (default: stdout). Raises ``UsageError`` (bad command),
    ``ScriptError`` (the script raised, exited non-zero, or built no optimizer) or ``ScriptInterrupted`` (Ctrl-C; a
    ``KeyboardInterrupt``). ``runner``: a ``Runner`` (subclass) to use instead of a new one (``steps``, ``every``
    and ``ignore`` are then its own; no re-run is made)."""
    if runner is not None:
        return _run_once(command, steps, every, ignore, script_stdout, runner=runner)[0]
    rng = _rng_states()
    report, runner = _run_once(command, steps, every, ignore, script_stdout)
    rerun = {i: c.rerun_step for i, w in enumerate(runner.watches) for c in w.checks
             if isinstance(c, FirstNonFinite) and c.rerun_step and ("F002", "<unplaced>") in w.ctx.found}
    if not rerun:
        return report
    after = _rng_states()
    _set_rng_states(rng)  # the same random numbers as the first run (a script that does not seed itself too)
    try:
        placed = _trace_rerun(command, max(rerun.values()), every, ignore, rerun)
    finally:
        _set_rng_states(after)
    for i, findings in placed.items():
        w = runner.watches[i]
        if findings:
            w.ctx.found.pop(("F002", "<unplaced>"), None)
            for f, step in findings:
                w.ctx.found[(f.rule, f.path)] = replace(f, step=step)
                w.ctx.first_step[f.rule] = step
    return runner.report(report.target)


def _rng_states() -> tuple[Any, ...]:
    import random

    import numpy as np

    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        cuda = torch.cuda.get_rng_state_all()
    return torch.get_rng_state(), random.getstate(), np.random.get_state(), cuda


def _set_rng_states(states: tuple[Any, ...]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(states[0])
    random.setstate(states[1])
    np.random.set_state(states[2])
    if states[3] is not None:
        torch.cuda.set_rng_state_all(states[3])


def _trace_rerun(command: list[str], steps: int, every: int, ignore: Iterable[str],
                 trace_at: dict[int, int]) -> dict[int, list[tuple[Any, int]]]:
    """The script run again up to ``steps`` with the trace armed before the given step of each watch (by number):
    the placed F findings (F001-F004) of each, with their steps. A failing re-run places nothing."""
    import io

    try:
        _, runner = _run_once(command, steps, every, ignore, io.StringIO(), trace_at)
    except Exception:
        return {}
    out: dict[int, list[tuple[Any, int]]] = {}
    for i, w in enumerate(runner.watches):
        if i in trace_at:
            out[i] = [(f, w.ctx.first_step.get(f.rule, trace_at[i])) for (code, path), f in w.ctx.found.items()
                      if code in ("F001", "F002", "F003", "F004") and path != "<unplaced>"]
    return out


def _run_once(command: list[str], steps: int, every: int, ignore: Iterable[str], script_stdout: TextIO | None,
              trace_at: dict[int, int] | None = None, runner: "Runner | None" = None) -> tuple[DoctorReport, "Runner"]:
    cmd = parse_command(command)
    runner = runner if runner is not None else Runner(steps, every, ignore, trace_at)
    runner.worker_stdout = None if script_stdout is None else "stderr" if script_stdout is sys.stderr else "discard"
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [cmd.target, *cmd.args]
    if not cmd.is_module:
        sys.path.insert(0, os.path.dirname(os.path.abspath(cmd.target)))
    else:
        sys.path.insert(0, os.getcwd())
    redirect = contextlib.redirect_stdout(script_stdout) if script_stdout is not None else contextlib.nullcontext()
    processes = _processes_started()
    try:
        with runner.patched(), redirect, _warning_filters(cmd.warnings):
            if cmd.is_module:
                runpy.run_module(cmd.target, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(cmd.target, run_name="__main__")
    except StopScript:
        pass
    except KeyboardInterrupt:  # Ctrl-C: the diagnosis of the steps so far, then the interruption (exit 130)
        raise ScriptInterrupted(_so_far(runner, cmd)) from None
    except SystemExit as exc:
        if exc.code not in (None, 0):
            steps = runner.report('').steps
            raise ScriptError(f"the script exited with status {exc.code} after {steps} step{'' if steps == 1 else 's'}",
                              _so_far(runner, cmd)) from None
    except ImportError as exc:
        if cmd.is_module and getattr(exc, "name", None) == cmd.target:
            raise UsageError(f"no module named {cmd.target}") from None
        raise ScriptError(f"the script raised {type(exc).__name__}: {_quote(exc)}{_where(exc)}",
                          _so_far(runner, cmd)) from exc
    except Exception as exc:
        raise ScriptError(f"the script raised {type(exc).__name__}: {_quote(exc)}{_where(exc)}",
                          _so_far(runner, cmd)) from exc
    finally:
        sys.argv = old_argv
        sys.path[:] = old_path
        runner.close_workers()
    if not runner.attached() and not runner.workers():
        started = _processes_started() - processes
        if started > 0:  # multiprocessing.Process: the training ran in other processes (spawn's workers are watched)
            raise ScriptError(f"the script built no torch.optim optimizer in this process; it started {started} other "
                              "process(es) (multiprocessing.Process?), which the doctor does not enter: start them with "
                              "torch.multiprocessing.spawn (its workers are watched), launch the workers with torchrun "
                              "--nproc_per_node N -m ssdaudit watch -- python SCRIPT, or call "
                              "ssdaudit.watch(model, optimizer) in the worker")
        raise ScriptError("the script built no torch.optim optimizer: nothing to watch")
    return runner.report(str(cmd)), runner


def _processes_started() -> int:
    """How many ``multiprocessing`` processes this interpreter has created so far (the standard library's counter of
    process names, read without advancing it); -1 if it cannot be read."""
    import multiprocessing.process as mp_process

    counter = getattr(mp_process, "_process_counter", None)
    text = repr(counter)  # "count(4)": the next number to hand out
    return int(text[6:-1]) if text.startswith("count(") and text[6:-1].isdigit() else -1


def _so_far(runner: Runner, cmd: object) -> DoctorReport | None:
    """The diagnosis of the steps that ran before the script failed, when any optimizer was watched (here or in a
    spawned worker)."""
    return runner.report(str(cmd)) if runner.attached() or runner.workers() else None


def _quote(exc: BaseException) -> str:
    """The first line of ``exc``'s message; for a worker of ``torch.multiprocessing.spawn`` that raised
    (``ProcessRaisedException``, whose message is the worker's traceback), the worker and its error's last line."""
    index = getattr(exc, "error_index", None)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if isinstance(index, int) and len(lines) > 1 and lines[-1] != lines[0]:
        return f"process {index} raised {lines[-1]}"[:300]
    return first_line(exc)


def _where(exc: BaseException) -> str:
    """`` (at file.py:LINE)``: the innermost frame of the user's code that raised, not ssdaudit's or torch's."""
    found = user_traceback_entry(exc.__traceback__)
    return f" (at {os.path.relpath(found[0])}:{found[1]})" if found is not None else ""
