"""`ssdlite`: build, inspect and (as later issues land) train, evaluate and run the SSDLite detector."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from ssdaudit.cli import cli_errors
from ssdaudit.core.errors import UsageError

if TYPE_CHECKING:
    import torch

    from .config import SSDLiteConfig
    from .detector import SSDLite

app = typer.Typer(
    help="SSDLite with a MobileNetV2 backbone, built the way ssds.pytorch builds it.\n\n"
    "Examples:\n\n  ssdlite info ssds-voc\n\n"
    "  ssdlite train --data synthetic --epochs 8 --image-size 160 --width-mult 0.5 --out runs/shapes\n\n"
    "  ssdlite eval runs/shapes/best.pth --data synthetic\n\n"
    "  ssdlite detect runs/shapes/best.pth image.png --out detections/\n\n"
    "  ssdlite export runs/shapes/best.pth --onnx ssdlite.onnx\n\n"
    "  ssdlite data synth --out data/shapes-voc --n 500 --format voc",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Datasets on disk.", no_args_is_help=True, add_completion=False, rich_markup_mode=None)
app.add_typer(data_app, name="data")

PRESETS = {"ssds-voc": "ssds_voc", "ssds-coco": "ssds_coco", "paper-coco": "paper_coco", "tiny": "tiny"}
# Published figures to print beside ours.
PUBLISHED = {
    "ssds-voc": "ssds.pytorch: 4,577,792 params, 0.685 G MAdds",
    "ssds-coco": "ssds.pytorch: 9,245,312 params, 0.952 G MAdds",
    "paper-coco": "MobileNetV2 paper (Table 6): 4.3M params, 0.8B MAdds",
}


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"ssdlite {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """SSDLite detector tools."""


@app.command()
def info(
    preset: str = typer.Argument("ssds-voc", help=f"One of: {', '.join(PRESETS)}."),
    macs: bool = typer.Option(False, "--macs", help="Also count multiply-adds (runs one forward pass)."),
    backbone_weights: str = typer.Option(None, "--backbone-weights", help="Local torchvision mobilenet_v2 state_dict."),
) -> None:
    """Print a preset's parameter counts per part, priors and feature maps.

    Example: ssdlite info paper-coco --macs
    """
    import ssdlite_model

    from .complexity import count_macs, params_per_part

    with cli_errors():
        config = _preset(preset)
        try:
            model = ssdlite_model.build_ssdlite(config, backbone_weights)
        except (FileNotFoundError, ValueError) as exc:
            _fail(str(exc))
    counts = params_per_part(model)
    typer.echo(f"{preset}: {config.num_classes} classes, {config.image_size}x{config.image_size}")
    for part, n in counts.items():
        typer.echo(f"  {part:<9} {n:>12,}")
    typer.echo(f"  priors    {model.priors.shape[0]:>12,}   feature maps {model.feature_map_sizes}")
    typer.echo(f"  state_dict entries {len(model.state_dict())}")
    if macs:
        typer.echo(f"  MAdds     {count_macs(model, config.image_size) / 1e9:>12.3f} G")
    if preset in PUBLISHED:
        typer.echo(f"  published: {PUBLISHED[preset]}")


def _preset(name: str) -> "SSDLiteConfig":
    """The configuration of a preset name (ssds-voc, ...), or a one-line error listing the names."""
    import ssdlite_model

    if name not in PRESETS:
        _fail(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    config: SSDLiteConfig = getattr(ssdlite_model, PRESETS[name])()
    return config


def _fail(message: str) -> NoReturn:
    """A user mistake: one line, exit 2 (printed by ``cli_errors``)."""
    raise UsageError(message)


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


class OptimizerName(str, Enum):
    sgd = "sgd"
    adamw = "adamw"


class Precision(str, Enum):
    auto = "auto"
    bf16 = "bf16"
    fp16 = "fp16"
    off = "off"


class Augment(str, Enum):
    auto = "auto"
    ssd = "ssd"
    light = "light"
    none = "none"


class DeviceName(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _given(ctx: typer.Context) -> set[str]:
    """The parameters typed on the command line (not defaults): a resume keeps the stored value of the others."""
    given = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)  # click's ParameterSource (typer may vendor click)
        if source is not None and getattr(source, "name", "") == "COMMANDLINE":
            given.add(name)
    return given


@app.command()
def train(
    ctx: typer.Context,
    data: str = typer.Option("synthetic", "--data", help="synthetic | voc:ROOT | coco:IMAGES,ANNOTATIONS[,VAL_ANNOTATIONS]"),
    epochs: int = typer.Option(10, "--epochs", min=1),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per step (per process under torchrun)."),
    lr: float = typer.Option(0.01, "--lr", min=0.0, help="Peak learning rate."),
    optimizer: OptimizerName = typer.Option(OptimizerName.sgd, "--optimizer", help="sgd (momentum 0.9, ssds.pytorch's) or adamw."),
    clip_grad: float = typer.Option(None, "--clip-grad", min=0.0, help="Clip the gradient's L2 norm to this."),
    weight_decay: float = typer.Option(1e-4, "--weight-decay", min=0.0, help="On conv weights; never on BatchNorm or biases."),
    warmup_epochs: float = typer.Option(1.0, "--warmup-epochs", min=0.0),
    image_size: int = typer.Option(300, "--image-size", min=32),
    width_mult: float = typer.Option(1.0, "--width-mult", min=0.05),
    out: Path = typer.Option(Path("runs/ssdlite"), "--out", help="RUN_DIR: checkpoints, metrics.jsonl, training.png."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    seed: int = typer.Option(0, "--seed"),
    n_train: int = typer.Option(2000, "--n-train", min=1, help="Synthetic training images."),
    n_val: int = typer.Option(200, "--n-val", min=1, help="Synthetic validation images."),
    augment: Augment = typer.Option(Augment.auto, "--augment", help="auto (light for synthetic, ssd otherwise) | ssd | light | none"),
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader worker processes."),
    gradflow: bool = typer.Option(False, "--gradflow", help="Log gradient flow to RUN_DIR/gradflow (ssdaudit gradflow RUN_DIR)."),
    amp: Precision = typer.Option(Precision.auto, "--amp", help="auto (bf16 on CUDA, off on CPU) | bf16 | fp16 | off"),
    device: DeviceName = typer.Option(DeviceName.auto, "--device", help="auto | cpu | cuda"),
    time_budget: float = typer.Option(None, "--time-budget", help="Minutes: stop, evaluate and checkpoint when spent."),
    preset: str = typer.Option("ssds-voc", "--preset", help="Architecture to start from (classes and size come from the data): " + ", ".join(PRESETS)),
    override: bool = typer.Option(False, "--override", help="With --resume: accept flags that differ from the stored settings."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Train SSDLite from scratch. Under torchrun it trains with DistributedDataParallel.

    Exit codes: 0 trained, 1 the loss diverged (NaN/Inf; the last good checkpoint is kept), 2 a data, run-directory
    or resume problem.

    Examples:

      ssdlite train --data synthetic --epochs 8 --image-size 160 --width-mult 0.5 --out runs/shapes

      ssdlite train --data voc:data/shapes-voc --epochs 30 --out runs/voc --gradflow

      ssdlite train --out runs/shapes --resume          (the stored settings; a differing flag needs --override)

      ssdlite train --out runs/shapes --resume --epochs 12 --override

      torchrun --nproc_per_node=2 -m ssdlite_model.cli train --data synthetic --epochs 4 --out runs/ddp
    """
    from .train import CHECKPOINT, Diverged, Trainer, TrainSettings, merge_resume_settings

    settings = TrainSettings(
        data=data, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer.value, clip_grad=clip_grad,
        weight_decay=weight_decay, warmup_epochs=warmup_epochs, image_size=image_size, width_mult=width_mult,
        out=str(out), resume=resume, seed=seed, n_train=n_train, n_val=n_val, augment=augment.value, workers=workers,
        gradflow=gradflow, amp=amp.value, device=device.value, time_budget_min=time_budget,
    )
    with cli_errors(False, debug):
        base = _preset(preset)
        if override and not resume:
            _fail("--override only applies with --resume")
        if resume and (out / CHECKPOINT).is_file():
            given = _given(ctx)
            settings, stored_config, notes = merge_resume_settings(out / CHECKPOINT, settings, given, override)
            base = base if "preset" in given else stored_config  # the same architecture, unless asked otherwise
            for note in notes:
                typer.echo(f"note: {note}", err=True)
        try:
            trainer = Trainer(settings, base_config=base)
            records = trainer.fit()
        except Diverged as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except ValueError as exc:  # an invalid SSDLiteConfig (sizes too small for the feature maps, ...)
            _fail(str(exc))
    if trainer.dist.main and records:
        last = records[-1]
        summary = f"trained to epoch {last['epoch']}: loss {last['loss']:.3f}"
        if "map50" in last:
            summary += f", mAP@0.5 {last['map50']:.3f}"
        typer.echo(f"{summary}; checkpoint {out / 'last.pth'}, metrics {out / 'metrics.jsonl'}")
    elif trainer.dist.main:
        typer.echo(f"nothing to train: the run in {out} already reached epoch {trainer.epoch} of {settings.epochs}")


def _load(checkpoint: Path, preset: str | None) -> "tuple[SSDLite, dict[str, Any]]":
    from .checkpoint import load_checkpoint_model

    return load_checkpoint_model(checkpoint, _preset(preset) if preset is not None else None)


@app.command("eval")
def evaluate(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `ssdlite train` (or a state_dict with --preset)."),
    data: str = typer.Option("synthetic", "--data", help="synthetic | voc:ROOT | coco:IMAGES,ANNOTATIONS"),
    n_val: int = typer.Option(200, "--n-val", min=1, help="Synthetic validation images."),
    seed: int = typer.Option(None, "--seed", help="Synthetic data seed (default: the checkpoint's training seed)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    preset: str = typer.Option(None, "--preset", help="Model for a bare state_dict: " + ", ".join(PRESETS)),
    fmt: OutputFormat = typer.Option(OutputFormat.text, "--format", help="text or json."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Evaluate a checkpoint: VOC07 mAP@0.5 (all-point and 11-point), COCO mAP@[.5:.95], per-class AP.

    Example: ssdlite eval runs/shapes/best.pth --data synthetic
    """
    import json

    from .evaluate import evaluate_model
    from .train import TrainSettings, build_datasets

    with cli_errors(fmt is OutputFormat.json, debug):
        model, state = _load(checkpoint, preset)
        stored = state.get("settings")
        settings: dict[str, Any] = stored if isinstance(stored, dict) else {}
        stored_seed = settings.get("seed", 0)
        cfg = model.config
        s = TrainSettings(data=data, image_size=cfg.image_size, n_val=n_val, n_train=1,
                          seed=seed if seed is not None else (stored_seed if isinstance(stored_seed, int) else 0),
                          num_shapes=max(1, min(cfg.num_classes - 1, 6)))
        _, val, names = build_datasets(s)
        if cfg.class_names and tuple(names) != tuple(cfg.class_names)[: len(names)]:
            _fail(f"the data's classes {list(names)} differ from the checkpoint's {list(cfg.class_names)}")
        metrics = evaluate_model(model, val, batch_size)
    if fmt is OutputFormat.json:
        typer.echo(json.dumps({"checkpoint": str(checkpoint), "images": len(val), **metrics.to_dict()}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{checkpoint}: {len(val)} images of {data}", title_justify="left")
    for col in ("class", "ground truth", "AP@0.5", "AP@0.5 (11-pt)", "AP@[.5:.95]"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, v in metrics.per_class.items():
        table.add_row(name, str(v["gt"]), f"{v['ap50']:.3f}", f"{v['ap50_11pt']:.3f}", f"{v['ap']:.3f}")
    table.add_row("[bold]mean[/]", "", f"[bold]{metrics.map50:.3f}[/]", f"{metrics.map50_11pt:.3f}", f"{metrics.coco_map:.3f}")
    Console(highlight=False).print(table)


@app.command()
def detect(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `ssdlite train`."),
    images: list[Path] = typer.Argument(..., help="Image files (PNG, JPEG)."),
    out: Path = typer.Option(Path("detections"), "--out", help="Folder for the annotated PNGs."),
    score: float = typer.Option(0.3, "--score", min=0.0, max=1.0, help="Draw detections at or above this score."),
    preset: str = typer.Option(None, "--preset", help="Model for a bare state_dict."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Draw detections (boxes, labels, scores) on images and write them as PNGs.

    Example: ssdlite detect runs/shapes/best.pth a.png b.jpg --out detections/
    """
    from ssdaudit.core.io import atomic_write

    from .data.files import _read_image
    from .drawing import draw_detections

    with cli_errors(False, debug):
        model, _ = _load(checkpoint, preset)
        names = model.config.class_names or tuple(f"class{k}" for k in range(1, model.config.num_classes))
        targets = _output_names(images, out)
        for path, target in zip(images, targets):
            if not path.is_file():
                _fail(f"no such image: {path}")
            image = _read_image(path)
            det = detect_in_image(model, image, score)
            png = draw_detections(image, det, names, score)
            try:
                atomic_write(target, lambda f: f.write(png))
            except OSError as exc:
                _fail(f"cannot write {target}: {exc.strerror or exc}")
            typer.echo(f"{path}: {len(det['boxes'])} detections >= {score} -> {target}")


def detect_in_image(model: "SSDLite", image: "torch.Tensor", score: float) -> "dict[str, torch.Tensor]":
    """Detections on one (3, H, W) image in [0, 1]: the model sees it resized to its square input; boxes come back
    in the image's own pixels, {"boxes": (D, 4) xyxy, "scores": (D,), "labels": (D,)}."""
    import torch
    from torchvision.transforms.v2.functional import resize

    size = model.config.image_size
    h, w = image.shape[-2:]
    with torch.no_grad():
        det = model.detect(resize(image, [size, size], antialias=True)[None], score_threshold=score)[0]
    det["boxes"] = det["boxes"] * torch.tensor([w / size, h / size, w / size, h / size])
    return det


def _output_names(images: list[Path], out: Path) -> list[Path]:
    """``out/<stem>_detections.png`` per image; images that share a stem (a/x.png, b/x.png) get their parent
    folders' names too, so no output overwrites another."""
    stems = [p.stem for p in images]
    names = []
    for p in images:
        stem = p.stem
        if stems.count(stem) > 1:
            parts = [x for x in p.resolve().parent.parts[-2:] if x not in ("/", "")]
            stem = "_".join([*parts, stem])
        names.append(stem)
    seen: dict[str, int] = {}
    unique = []
    for n in names:  # the same file named twice: number the repeats
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return [out / f"{n}_detections.png" for n in unique]


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `ssdlite train`."),
    onnx: Path = typer.Option(..., "--onnx", help="Output .onnx file."),
    preset: str = typer.Option(None, "--preset", help="Model for a bare state_dict."),
    opset: int = typer.Option(17, "--opset", min=7, max=23, help="ONNX opset (7-23; 17 is well supported)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Export the network's forward (images -> loc, conf) to ONNX and check it against PyTorch with onnxruntime.

    Example: ssdlite export runs/shapes/best.pth --onnx ssdlite.onnx
    """
    from .export import export_onnx

    with cli_errors(False, debug):
        model, _ = _load(checkpoint, preset)
        report = export_onnx(model, onnx, opset)
    typer.echo(f"wrote {onnx} ({report['bytes']:,} bytes); onnxruntime vs PyTorch: max |diff| loc "
               f"{report['max_abs_diff_loc']:.2e}, conf {report['max_abs_diff_conf']:.2e}")


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", help="Folder to write."),
    n: int = typer.Option(200, "--n", min=1, help="Number of images."),
    fmt: str = typer.Option("voc", "--format", help="voc or coco."),
    image_size: int = typer.Option(300, "--image-size", min=32),
    num_shapes: int = typer.Option(3, "--num-shapes", min=1, max=6),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.0, max=0.9),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write the synthetic shapes dataset as a Pascal VOC tree or a COCO folder.

    Examples:

      ssdlite data synth --out data/shapes-voc --n 500 --format voc      (then --data voc:data/shapes-voc)

      ssdlite data synth --out data/shapes-coco --n 500 --format coco
      (then --data coco:data/shapes-coco/images,data/shapes-coco/annotations/instances_train.json)
    """
    from .data import ShapesDataset, write_coco, write_voc

    with cli_errors():
        if fmt not in ("voc", "coco"):
            _fail(f"unknown --format {fmt!r}: use voc or coco")
        dataset = ShapesDataset(n, image_size, num_shapes, seed=seed)
        try:
            writer = write_voc if fmt == "voc" else write_coco
            where = writer(dataset, out, val_fraction)
        except OSError as exc:
            _fail(f"cannot write to {out}: {exc.strerror or exc}")
    typer.echo(f"wrote {n} images ({fmt}) to {where}")


def main() -> None:
    import importlib.util
    import sys
    import warnings

    from ssdaudit.cli import TORCH_EXTRA, run_app

    asks_help = len(sys.argv) < 2 or any(a in ("--help", "-h", "--version") for a in sys.argv[1:])
    missing = [m for m in TORCH_EXTRA if importlib.util.find_spec(m) is None]
    if missing and not asks_help:  # every ssdlite command builds or runs the detector
        print(f"error: ssdlite needs {', '.join(missing)}, not installed here: pip install 'ssdaudit[torch]'", file=sys.stderr)
        raise SystemExit(2)

    # torchvision.io's JPEG/PNG codecs still work; its deprecation notice would only clutter every command.
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision")
    run_app(app)


if __name__ == "__main__":
    main()
