"""The `ssdaudit` command line. Heavy modules (torch) are imported inside commands, so --help is instant."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer

app = typer.Typer(
    help="Find the parameters a PyTorch model uses but never registers.\n\n"
    "Examples:\n\n"
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
