"""The `ssdaudit` command line. Heavy modules (torch) are imported inside commands, so --help is instant."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer

app = typer.Typer(
    help="Find the parameters a PyTorch model uses but never registers.\n\n"
    "Examples:\n\n"
    "  ssdaudit gradflow examples/buggy_plain_list.py --steps 2 --out out/gradflow\n\n"
    "  ssdaudit diff run/epoch1.pth run/epoch30.pth\n\n"
    "  ssdaudit params examples/buggy_plain_list.py --reference ssds-voc\n\n"
    "  ssdaudit params mypkg.models:build --input-shape 1,3,224,224 --format json\n\n"
    "  ssdaudit params checkpoint.pth",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


class Format(str, Enum):
    text = "text"
    json = "json"


class Device(str, Enum):
    cpu = "cpu"
    meta = "meta"


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"ssdaudit {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """ssdaudit: PyTorch parameter audits."""


def _fail(message: str, debug: bool, exc: BaseException | None = None) -> None:
    if debug and exc is not None:
        import traceback

        traceback.print_exception(exc)
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(x) for x in text.replace("x", ",").split(",") if x.strip())
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(f"bad --input-shape {text!r}: give positive integers like 1,3,300,300")
    return shape


def _console():
    from rich.console import Console

    # Colour only on a terminal; rich checks isatty itself, NO_COLOR is honoured.
    return Console(highlight=False, soft_wrap=True)


@app.command()
def params(
    target: str = typer.Argument(..., help="model.py[:NAME], package.module:NAME, or a checkpoint (.pt/.pth/.bin/.safetensors)."),
    reference: str = typer.Option(None, "--reference", "-r", help="ssds-voc, ssds-coco, torchvision-ssdlite, file.py[:NAME] or a checkpoint."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="A checkpoint of this model: real size against predicted, missing tensors."),
    input_shape: str = typer.Option(None, "--input-shape", help="Probe input shape, e.g. 1,3,300,300 (used when the file has no example_input())."),
    device: Device = typer.Option(Device.cpu, "--device", help="meta: build without allocating parameter memory."),
    depth: int = typer.Option(1, "--depth", min=1, help="Module depth of the parameter table."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 on warnings too."),
    fmt: Format = typer.Option(Format.text, "--format", help="text or json."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for load errors."),
) -> None:
    """Count registered parameters, find unregistered ones, compare with a reference, predict the checkpoint.

    Exit codes: 0 clean, 1 an error finding (warnings too with --strict), 2 the target could not be loaded.

    Examples:

      ssdaudit params examples/buggy_plain_list.py --reference ssds-voc

      ssdaudit params examples/fixed_modulelist.py --checkpoint run/model.pth --format json

      ssdaudit params big_model.py:build --device meta --input-shape 1,128
    """
    from .loading import LoadError, load_state_dict, load_target

    try:
        loaded = load_target(target, device=device.value)
        ref_obj, ref_name = _load_reference(reference, device.value) if reference else (None, None)
        ckpt_state = load_state_dict(checkpoint) if checkpoint is not None else None
        example = loaded.example_input
        if example is None and input_shape:
            import torch

            example = torch.rand(_parse_shape(input_shape), device=device.value)
    except (LoadError, ValueError) as exc:
        _fail(str(exc), debug, exc)
    from .findings import Severity
    from .params import ParamsReport, compare_with_checkpoint, compare_with_reference, group_state_dict, state_dict_params
    from .registration import ProbeError

    if loaded.model is None:  # a checkpoint target: counts from its tensors
        state = loaded.state_dict
        total = state_dict_params(state)
        size, exact = Path(target).stat().st_size, True  # the real file: no prediction needed
        groups = group_state_dict(state, depth)
        report = ParamsReport(target, total, total, 0, total, size, size, exact, groups, [])
        if ref_obj is not None:
            from .params import count_params, group_params

            if isinstance(ref_obj, dict):
                rg, rt = group_state_dict(ref_obj, depth), state_dict_params(ref_obj)
            else:
                rg, rt = group_params(ref_obj, depth), count_params(ref_obj)[0]
            report.reference = compare_with_reference(ref_name, rg, rt, groups, total, [])
    else:
        from .params import audit_params

        try:
            report = audit_params(loaded.model, ref_obj, example, depth, target=target, reference_name=ref_name or "")
        except ProbeError as exc:
            _fail(f"the forward probe failed: {exc} (check example_input() or --input-shape)", debug, exc)
        if ckpt_state is not None:
            report.checkpoint = compare_with_checkpoint(loaded.model, ckpt_state, str(checkpoint), checkpoint.stat().st_size)
    if fmt is Format.json:
        from .report import render_json

        typer.echo(render_json(report.to_dict()))
    else:
        from .report import render_params_text

        render_params_text(report, _console())
    failing = {Severity.ERROR, Severity.WARNING} if strict else {Severity.ERROR}
    broken_ckpt = report.checkpoint is not None and (report.checkpoint.missing_keys or report.checkpoint.shape_mismatch)
    raise typer.Exit(1 if any(f.severity in failing for f in report.findings) or broken_ckpt else 0)


def _load_reference(spec: str, device: str):
    from .loading import LoadError, is_checkpoint_path, load_state_dict, load_target
    from .references import BUILTIN_REFERENCES

    if spec in BUILTIN_REFERENCES:
        import torch

        with torch.device(device):
            return BUILTIN_REFERENCES[spec][1](), spec
    if is_checkpoint_path(spec):
        return load_state_dict(spec), spec
    if spec.endswith(".py") or ":" in spec:
        return load_target(spec, device=device, want_input=False).model, spec
    names = ", ".join(BUILTIN_REFERENCES)
    raise LoadError(f"unknown reference {spec!r}: use one of {names}, a file.py[:NAME] or a checkpoint")


@app.command()
def gradflow(
    target: str = typer.Argument(..., help="model.py[:NAME], package.module:NAME, or a RUN_DIR with a gradflow log."),
    steps: int = typer.Option(3, "--steps", min=1, help="Training steps of the probe."),
    input_shape: str = typer.Option(None, "--input-shape", help="Probe input shape, e.g. 8,3,300,300 (when the file has no example_input())."),
    batch_size: int = typer.Option(2, "--batch-size", min=1, help="Images per step for this project's SSDLite models."),
    lr: float = typer.Option(0.01, "--lr", help="Learning rate of the default SGD optimizer."),
    out: Path = typer.Option(None, "--out", help="Write the log and the PNG plots here."),
    fmt: Format = typer.Option(Format.text, "--format", help="text or json."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for load and probe errors."),
) -> None:
    """Follow gradients through a few training steps (or a logged run) and name the parameters that do not learn.

    For a model file: input from example_input() or --input-shape, optimizer from build_optimizer(model) or SGD over
    model.parameters(), loss from compute_loss(output) or the sum of the outputs' means. This project's SSDLite
    models train on synthetic shapes with the MultiBox loss.

    Exit codes: 0 clean, 1 an error finding (G001-G004, G006), 2 could not run (load, probe or log problem).

    Examples:

      ssdaudit gradflow examples/buggy_plain_list.py --steps 2 --out out/gradflow

      ssdaudit gradflow runs/shapes            # a RUN_DIR written by `ssdlite train --gradflow`

      ssdaudit gradflow mynet.py:build --input-shape 8,3,224,224 --format json
    """
    from .loading import LoadError

    try:
        run, title = _gradflow_run(target, steps, input_shape, batch_size, lr, out, fmt)
    except (LoadError, ValueError) as exc:
        _fail(str(exc), debug, exc)
    from .gradflow import analyse_gradflow
    from .findings import Severity

    findings, layers = analyse_gradflow(run)
    plots = []
    if out is not None:
        from .plots import plot_gradflow_run

        try:
            plots = plot_gradflow_run(run, layers, out, title)
        except OSError as exc:
            _fail(f"cannot write plots to {out}: {exc.strerror or exc}", debug, exc)
    if fmt is Format.json:
        from .report import render_json

        data = {
            "target": target,
            "steps": int(len(run.steps)),
            "findings": [f.to_dict() for f in findings],
            "layers": [ls.to_dict() for ls in layers],
            "plots": [str(p) for p in plots],
            "warnings": run.warnings,
        }
        typer.echo(render_json(data))
    else:
        from .report import render_gradflow_text

        render_gradflow_text(target, run, findings, layers, plots, _console())
    raise typer.Exit(1 if any(f.severity is Severity.ERROR for f in findings) else 0)


def _gradflow_run(target: str, steps: int, input_shape, batch_size: int, lr: float, out, fmt):
    """A logged run read back, or a probe run of a model target."""
    from .gradflow import find_log_dir, read_gradflow_log

    path = Path(target)
    if path.is_dir():
        run = read_gradflow_log(path)
        for w in run.warnings:
            typer.echo(f"warning: {w}", err=True)
        return run, f"Gradient flow: {path} ({len(run.steps)} steps)"
    import torch

    from .gradflow import default_loss, probe_training, ssdlite_probe
    from .loading import LoadError, load_target
    from .registration import ProbeError

    loaded = load_target(target)
    model, module = loaded.model, loaded.module
    from ssdlite_model.detector import SSDLite

    if isinstance(model, SSDLite):
        make_batch, compute_loss = ssdlite_probe(model, batch_size)
    else:
        example = loaded.example_input
        if example is None and input_shape:
            example = torch.rand(_parse_shape(input_shape))
        if example is None:
            raise LoadError(f"{target}: no example_input() in the file: give --input-shape, e.g. 2,3,224,224")
        user_loss = getattr(module, "compute_loss", None)
        make_batch = lambda _step: (example, None)  # noqa: E731
        compute_loss = (lambda output, _t: user_loss(output)) if callable(user_loss) else default_loss
    build_opt = getattr(module, "build_optimizer", None)
    try:
        optimizer = build_opt(model) if callable(build_opt) else torch.optim.SGD(model.parameters(), lr=lr)
    except Exception as exc:
        raise LoadError(f"build_optimizer(model) in {target} raised {exc.__class__.__name__}: {exc}") from exc
    log_dir = out / "gradflow" if out is not None else None
    if log_dir is not None and find_log_dir(log_dir):
        for old in log_dir.glob("chunk_*.npz"):  # a fresh probe replaces an old log, never mixes with it
            old.unlink()
    with _step_progress(steps, "probe steps", fmt is Format.text) as advance:
        try:
            run = probe_training(model, steps, make_batch, compute_loss, optimizer, log_dir, advance)
        except ProbeError as exc:
            raise LoadError(f"the gradflow probe failed at {exc} (check example_input(), --input-shape or compute_loss)") from exc
    return run, f"Gradient flow: {target} ({steps} steps)"


def _step_progress(total: int, label: str, enabled: bool):
    """A transient progress bar on stderr (terminal only) counting steps; yields ``advance(step)`` or None."""
    import contextlib

    @contextlib.contextmanager
    def bar():
        if not enabled or not sys.stderr.isatty():
            yield None
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        with Progress(f"[progress.description]{label}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task(label, total=total)
            yield lambda step: progress.update(task, completed=step)

    return bar()


class MapMode(str, Enum):
    auto = "auto"
    none = "none"


@app.command()
def diff(
    a: Path = typer.Argument(..., help="First checkpoint: .pt/.pth/.bin/.tar, .safetensors, or a directory of shards."),
    b: Path = typer.Argument(..., help="Second checkpoint, compared against the first."),
    rtol: float = typer.Option(0.0, "--rtol", min=0.0, help="Relative tolerance: tensors within it count as equal."),
    atol: float = typer.Option(0.0, "--atol", min=0.0, help="Absolute tolerance."),
    map_mode: MapMode = typer.Option(MapMode.auto, "--map", help="auto: pair keys across prefixes and naming schemes; none: equal names only."),
    write_mapped: Path = typer.Option(None, "--write-mapped", help="Write B's tensors under A's names to this file (.pth or .safetensors)."),
    top: int = typer.Option(10, "--top", min=1, help="How many changed tensors and renamed keys to list."),
    fmt: Format = typer.Option(Format.text, "--format", help="text or json."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Unpickle files that hold Python objects (runs their code: only for files you trust)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for load errors."),
) -> None:
    """Compare two checkpoints: missing keys, shapes, dtypes, changed and unchanged tensors, NaN/Inf, file size.

    Files are read with torch.load(weights_only=True, mmap=True) or safetensors, one tensor at a time.

    Exit codes: 0 identical (within tolerance), 1 different, 2 unreadable, refused or not a checkpoint.

    Examples:

      ssdaudit diff run/epoch1.pth run/epoch30.pth

      ssdaudit diff ours.pth ssds_port.pth --map auto --write-mapped ported.pth

      ssdaudit diff model.safetensors shards/ --rtol 1e-3 --format json
    """
    from .checkpoints import open_checkpoint
    from .loading import LoadError

    try:
        ca = open_checkpoint(a, trust_pickle)
        cb = open_checkpoint(b, trust_pickle)
    except LoadError as exc:
        _fail(str(exc), debug, exc)
    from .diff import diff_checkpoints, write_mapped as write_b

    with _byte_progress(ca.tensor_bytes + cb.tensor_bytes, "comparing", fmt is Format.text) as advance:
        report = diff_checkpoints(ca, cb, rtol, atol, map_mode.value, progress=advance)
    if write_mapped is not None:
        if report.mapping is None or not report.mapping.pairs:
            _fail("--write-mapped: no key of B could be paired with A (try --map auto)", debug)
        try:
            n = write_b(cb, report.mapping, write_mapped)
        except OSError as exc:
            _fail(f"cannot write {write_mapped}: {exc.strerror or exc}", debug, exc)
        typer.echo(f"wrote {n} tensors of B under A's names to {write_mapped}", err=True)
    if fmt is Format.json:
        from .report import render_json

        typer.echo(render_json(report.to_dict()))
    else:
        from .report import render_diff_text

        render_diff_text(report, _console(), top)
    raise typer.Exit(0 if report.identical else 1)


def _byte_progress(total: int, label: str, enabled: bool):
    """A transient progress bar on stderr (terminal only) for work measured in bytes; yields ``advance(key, n)``."""
    import contextlib

    @contextlib.contextmanager
    def bar():
        if not enabled or not sys.stderr.isatty() or total < 64 * 2**20:
            yield None
            return
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        with Progress(f"[progress.description]{label}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      TimeRemainingColumn(), console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task(label, total=total)
            yield lambda _key, n: progress.advance(task, n)

    return bar()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
