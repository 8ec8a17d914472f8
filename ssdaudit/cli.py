"""The `ssdaudit` command line. Heavy modules (torch) are imported inside commands, so --help is instant."""

from __future__ import annotations

import contextlib
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from .errors import UsageError, first_line

if TYPE_CHECKING:
    from rich.console import Console

    from .findings import Finding
    from .gradflow import GradFlowRun

app = typer.Typer(
    help="Find the parameters a PyTorch model uses but never registers.\n\n"
    "Rules: `ssdaudit rules`; each has a page in docs/rules/<CODE>.md.\n\n"
    "Examples:\n\n"
    "  ssdaudit gradflow examples/buggy_plain_list.py --steps 2 --out out/gradflow\n\n"
    "  ssdaudit diff run/epoch1.pth run/epoch30.pth\n\n"
    "  ssdaudit lint src/ --format github\n\n"
    "  ssdaudit check            # the CI gate configured in pyproject.toml\n\n"
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
    sarif = "sarif"
    github = "github"


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


def _fail(message: str) -> NoReturn:
    """A user mistake: one line on stderr (and a JSON error document under --format json), exit 2."""
    raise UsageError(message)


def _parse_shape(text: str, flag: str = "--input-shape") -> tuple[int, ...]:
    from .audit import check_input_shape

    try:
        shape = tuple(int(x) for x in text.replace("x", ",").split(",") if x.strip())
    except ValueError:
        shape = ()
    if not shape:
        _fail(f"bad {flag} {text!r}: give positive integers like 1,3,300,300")
    return check_input_shape(shape, flag)


def _timeout_option() -> Any:
    from .errors import DEFAULT_TIMEOUT_S

    return typer.Option(DEFAULT_TIMEOUT_S, "--timeout", min=0.0, help="Seconds allowed for importing, building and probing the "
                        "target (0: no limit); a model file that hangs stops with exit 2.")


def _console() -> "Console":
    from rich.console import Console

    # Colour only on a terminal; rich checks isatty itself, NO_COLOR is honoured.
    return Console(highlight=False, soft_wrap=True)


@app.command()
def params(
    target: str = typer.Argument(..., help="model.py[:NAME], package.module:NAME, or a checkpoint (.pt/.pth/.bin/.safetensors, or a directory of shards or DCP)."),
    reference: str = typer.Option(None, "--reference", "-r", help="ssds-voc, ssds-coco, torchvision-ssdlite, file.py[:NAME], a checkpoint or a checkpoint directory (shards, DCP)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="A checkpoint (file or directory: shards, DCP) of this model: real size against predicted, missing tensors."),
    input_shape: str = typer.Option(None, "--input-shape", help="Probe input shape, e.g. 1,3,300,300 (used when the file has no example_input())."),
    device: Device = typer.Option(Device.cpu, "--device", help="meta: build without allocating parameter memory."),
    depth: int = typer.Option(1, "--depth", min=1, help="Module depth of the parameter table."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 on warnings too."),
    fmt: Format = typer.Option(Format.text, "--format", help="text, json, sarif (GitHub code scanning) or github (workflow annotations)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for load errors."),
    timeout: float = _timeout_option(),
    layers: bool = typer.Option(False, "--layers", help="torchinfo's layer table (shapes from the probe input, down to "
                                "--depth) with the unregistered members spliced in and marked."),
    roundtrip: bool = typer.Option(True, "--roundtrip/--no-roundtrip", help="Save-reload round trip (R007): build the "
                                   "model twice, reload one from the other's state_dict, compare outputs."),
) -> None:
    """Count registered parameters, find unregistered ones, compare with a reference, predict the checkpoint.

    Exit codes: 0 clean, 1 an error finding (warnings too with --strict), 2 the target could not be loaded.

    Examples:

      ssdaudit params examples/buggy_plain_list.py --reference ssds-voc

      ssdaudit params examples/fixed_modulelist.py --checkpoint run/model.pth --format json

      ssdaudit params big_model.py:build --device meta --input-shape 1,128
    """
    with _errors(fmt, debug):
        from .audit import audit_target

        shape = _parse_shape(input_shape) if input_shape else None
        report = audit_target(target, reference, checkpoint, shape, device.value, depth, timeout, roundtrip,
                              layers=layers)
        _emit(report, fmt, target.split(":")[0])
    from .findings import Severity

    failing = {Severity.ERROR, Severity.WARNING} if strict else {Severity.ERROR}
    broken_ckpt = report.checkpoint is not None and (report.checkpoint.missing_keys or report.checkpoint.shape_mismatch)
    raise typer.Exit(1 if any(f.severity in failing for f in report.findings) or broken_ckpt else 0)


def _errors(fmt: "Format", debug: bool) -> contextlib.AbstractContextManager[None]:
    from .errors import cli_errors

    return cli_errors(fmt is Format.json, debug)


@app.command()
def gradflow(
    target: str = typer.Argument(..., help="model.py[:NAME], package.module:NAME, or a RUN_DIR with a gradflow log."),
    steps: int = typer.Option(3, "--steps", min=1, help="Training steps of the probe."),
    input_shape: str = typer.Option(None, "--input-shape", help="Probe input shape, e.g. 8,3,300,300 (when the file has no example_input())."),
    batch_size: int = typer.Option(2, "--batch-size", min=1, help="Images per step for this project's SSDLite models."),
    lr: float = typer.Option(0.01, "--lr", help="Learning rate of the default SGD optimizer."),
    out: Path = typer.Option(None, "--out", help="Write the log and the PNG plots here."),
    fmt: Format = typer.Option(Format.text, "--format", help="text, json, sarif (GitHub code scanning) or github (workflow annotations)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for load and probe errors."),
    timeout: float = _timeout_option(),
    tensorboard: Path = typer.Option(None, "--tensorboard", help="Also write the run as TensorBoard events to this folder."),
) -> None:
    """Follow gradients through a few training steps (or a logged run) and name the parameters that do not learn.

    For a model file: input from example_input() or --input-shape, optimizer from build_optimizer(model) or SGD over
    model.parameters(), loss from compute_loss(output) or the sum of the outputs' means. This project's SSDLite
    models train on synthetic shapes with the MultiBox loss.

    Exit codes: 0 clean, 1 an error finding (G001-G004, G006), 2 could not run (load, probe or log problem).

    Examples:

      ssdaudit gradflow examples/buggy_plain_list.py --steps 2 --out out/gradflow

      ssdaudit gradflow runs/shapes            # a RUN_DIR written by `ssdlite train --gradflow`

      ssdaudit gradflow runs/shapes --tensorboard runs/shapes/tb   # then: tensorboard --logdir runs/shapes/tb

      ssdaudit gradflow mynet.py:build --input-shape 8,3,224,224 --format json
    """
    from .findings import Severity

    with _errors(fmt, debug):
        run, title = _gradflow_run(target, steps, input_shape, batch_size, lr, out, fmt, timeout)
        from .gradflow import analyse_gradflow

        findings, layers = analyse_gradflow(run)
        if tensorboard is not None:
            from .integrations.tensorboard import write_run

            try:
                write_run(run, findings, tensorboard)
            except OSError as exc:
                _fail(f"cannot write TensorBoard events to {tensorboard}: {exc.strerror or exc}")
        plots = []
        if out is not None:
            from .plots import plot_gradflow_run

            try:
                plots = plot_gradflow_run(run, layers, out, title)
            except OSError as exc:
                _fail(f"cannot write plots to {out}: {exc.strerror or exc}")
        from .gradflow import GradflowReport

        _emit(GradflowReport(target, run, findings, layers, plots), fmt, target.split(":")[0])
    raise typer.Exit(1 if any(f.severity is Severity.ERROR for f in findings) else 0)


def _gradflow_run(target: str, steps: int, input_shape: str | None, batch_size: int, lr: float, out: Path | None,
                  fmt: "Format", timeout: float) -> "tuple[GradFlowRun, str]":
    """A logged run read back, or a probe run of a model target (its code under the time limit)."""
    from .errors import Deadline, running_user_code
    from .gradflow import probe_target, read_gradflow_log
    from .loading import load_target

    path = Path(target)
    if path.is_dir():
        run = read_gradflow_log(path)
        for w in run.warnings:
            typer.echo(f"warning: {w}", err=True)
        return run, f"Gradient flow: {path} ({len(run.steps)} steps)"
    shape = _parse_shape(input_shape) if input_shape else None
    deadline = Deadline(timeout or None)
    with running_user_code(f"building {target}", deadline):
        loaded = load_target(target)
    log_dir = out / "gradflow" if out is not None else None
    from .progress import progress_bar

    with progress_bar(steps, "probe steps", fmt is Format.text) as advance, \
            running_user_code(f"training {target} for {steps} probe steps", deadline):
        run = probe_target(loaded, steps, shape, batch_size, lr, log_dir, advance and (lambda _step: advance()))
    return run, f"Gradient flow: {target} ({steps} steps)"


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
    with _errors(fmt, debug):
        from .checkpoints import open_checkpoint
        from .diff import diff_checkpoints, write_mapped as write_b

        ca = open_checkpoint(a, trust_pickle)
        cb = open_checkpoint(b, trust_pickle)
        for c in (ca, cb):
            if c.trusted_pickle:
                typer.echo(f"warning: --trust-pickle: {c.path} was unpickled with weights_only=False, which runs any "
                           "code it contains", err=True)
        from .progress import progress_bar

        with progress_bar(ca.tensor_bytes + cb.tensor_bytes, "comparing", fmt is Format.text, in_bytes=True) as advance:
            report = diff_checkpoints(ca, cb, rtol, atol, map_mode.value, progress=advance and (lambda _key, n: advance(n)))
        if write_mapped is not None:
            if report.mapping is None or not report.mapping.pairs:
                _fail("--write-mapped: no key of B could be paired with A (try --map auto)")
            try:
                n = write_b(cb, report.mapping, write_mapped)
            except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
                _fail(f"cannot write {write_mapped}: {getattr(exc, 'strerror', None) or first_line(exc)} "
                      "(nothing was written; free space or choose another path)")
            typer.echo(f"wrote {n} tensors of B under A's names to {write_mapped}", err=True)
        _emit(report, fmt, str(a), top=top)
    raise typer.Exit(0 if report.identical else 1)



def _emit(report: Any, fmt: Format, default_file: str | None = None, **text_options: Any) -> None:
    """Every report leaves the CLI here: JSON (``to_dict()``), SARIF or GitHub annotations, or the terminal view."""
    if fmt is Format.json:
        from .report import render_json

        typer.echo(render_json(report.to_dict()))
    elif fmt in (Format.sarif, Format.github):
        _emit_ci(fmt, report.findings, default_file)
    else:
        from .report import render_text

        render_text(report, _console(), **text_options)


def _emit_ci(fmt: Format, findings: "list[Finding]", default_file: str | None) -> None:
    from . import __version__
    from .report import render_github, render_sarif

    if fmt is Format.sarif:
        typer.echo(render_sarif(findings, __version__, default_file))
    else:
        text = render_github(findings, default_file)
        if text:
            typer.echo(text)


@app.command()
def lint(
    paths: list[Path] = typer.Argument(..., help="Python files or folders (searched recursively)."),
    ignore: str = typer.Option("", "--ignore", help="Rule codes to skip, comma-separated, e.g. R004."),
    exclude: list[Path] = typer.Option([], "--exclude", help="Files or folders read for context (base classes) but not reported; repeatable."),
    fmt: Format = typer.Option(Format.text, "--format", help="text, json, sarif or github."),
) -> None:
    """Static rules over Python source (nothing is imported or run): R001-R005 inside nn.Module classes.

    Rules: R001 modules in a plain list/dict/tuple (also .append), R002 parameters in one, R003 a module wrapped
    in a plain object, R004 a plain tensor attribute read in forward(), R005 a module built in forward().
    Each rule has a page: docs/rules/<CODE>.md (or `ssdaudit rules CODE`). Silence one line with
    `# ssdaudit: ignore[R001]`.

    Exit codes: 0 clean, 1 findings, 2 a path that does not exist.

    Examples:

      ssdaudit lint src/ models/

      ssdaudit lint . --format github

      ssdaudit lint model.py --format sarif > ssdaudit.sarif
    """
    from .findings import RULES, Severity

    with _errors(fmt, False):
        from .source_lint import lint_paths

        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            _fail(f"no such file or folder: {missing[0]}")
        codes = {c.strip().upper() for c in ignore.split(",") if c.strip()}
        unknown = sorted(codes - set(RULES))
        if unknown:
            _fail(f"unknown rule code {unknown[0]!r} in --ignore (see `ssdaudit rules`)")
        result = lint_paths(list(paths), codes, list(exclude))
        _emit(result, fmt)
    raise typer.Exit(1 if any(f.severity is not Severity.INFO for f in result.findings) else 0)


@app.command()
def check(
    config: Path = typer.Option(Path("pyproject.toml"), "--config", help="The file with [tool.ssdaudit]."),
    baseline: Path = typer.Option(None, "--baseline", help="Findings recorded here are known: reported, not failing."),
    write_baseline: bool = typer.Option(False, "--write-baseline", help="Record the current findings in --baseline (or the configured file) and exit 0."),
    fmt: Format = typer.Option(Format.text, "--format", help="text, json, sarif or github."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for configuration and load errors."),
) -> None:
    """The CI gate: lint the configured paths, then audit each configured model against its expectations.

    Configuration (pyproject.toml):

      [tool.ssdaudit]
      lint = ["src/"]
      exclude = ["src/legacy.py"]   # read for context, not reported
      ignore = ["R004"]
      [[tool.ssdaudit.models]]
      target = "models/net.py:build"
      reference = "ssds-voc"      # counts must match
      params = 4_577_792          # expected registered parameters
      tolerance = 0.0             # relative
      max_checkpoint_mb = 20
      gradflow_steps = 2          # run the gradflow probe too
      expect = "fail"             # a known-bad demonstration that must keep failing

    Exit codes: 0 everything holds, 1 a new error finding or a broken expectation, 2 a configuration or load problem.

    Examples:

      ssdaudit check

      ssdaudit check --baseline .ssdaudit-baseline.json --write-baseline

      ssdaudit check --format sarif > ssdaudit.sarif
    """
    with _errors(fmt, debug):
        from .check import read_baseline, run_check
        from .check import write_baseline as write_file
        from .config import load_config

        cfg = load_config(config)
        base_path = baseline or (cfg.root / cfg.baseline if cfg.baseline else None)
        known = read_baseline(base_path) if base_path is not None and not write_baseline else set()
        if write_baseline and base_path is None:
            _fail("--write-baseline needs --baseline FILE (or baseline = \"FILE\" in [tool.ssdaudit])")
        if fmt is Format.text and sys.stderr.isatty():
            from rich.console import Console

            status = Console(stderr=True, highlight=False)
        else:
            status = None
        report = run_check(cfg, known, progress=(lambda msg: status.print(f"[dim]{msg}...[/]")) if status else None)
        if write_baseline and base_path is not None:
            gating = [f for row in report.rows if row.expect == "pass" for f in row.findings]
            n = write_file(base_path, gating)
            typer.echo(f"wrote {n} known findings to {base_path}")
            raise typer.Exit(0)
        _emit(report, fmt)
    if any(r.status == "error" for r in report.rows):
        raise typer.Exit(2)
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def rules(
    code: str = typer.Argument(None, help="A rule code, e.g. R001; all rules when omitted."),
    fmt: Format = typer.Option(Format.text, "--format", help="text or json (sarif and github hold findings, not rules)."),
) -> None:
    """List the rules (code, name, summary) or explain one: why it matters, the fix, its docs page.

    Exit codes: 0 listed, 2 an unknown code or a format this command does not offer.

    Examples:

      ssdaudit rules G001

      ssdaudit rules --format json
    """
    from .findings import RULES

    with _errors(fmt, False):
        if fmt not in (Format.text, Format.json):
            _fail(f"--format {fmt.value}: `ssdaudit rules` prints text or json (sarif and github are for findings)")
        if code is not None and code.upper() not in RULES:
            _fail(f"unknown rule {code!r}: run `ssdaudit rules` for the list")
        chosen = [RULES[code.upper()]] if code is not None else list(RULES.values())
        if fmt is Format.json:
            from .report import render_json

            typer.echo(render_json({"rules": [r.to_dict() for r in chosen]}))
        elif code is None:
            for r in chosen:
                typer.echo(f"{r.code}  {r.name:<26} {r.severity.value:<8} {r.summary}")
        else:
            r = chosen[0]
            typer.echo(f"{r.code} {r.name} ({r.severity.value}): {r.summary}\n\nwhy: {r.why}\nfix: {r.fix}\ndocs: {r.docs}")


def main() -> None:
    """The console script: the typer app, with internal errors exiting 3 (``errors.cli_errors``) even when
    ``SSDAUDIT_RAISE_INTERNAL`` lets them propagate with their traceback."""
    from .errors import run_app

    run_app(app)


if __name__ == "__main__":
    main()
