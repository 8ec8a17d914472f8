"""`ssdlite`: build, inspect and (as later issues land) train, evaluate and run the SSDLite detector."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="SSDLite with a MobileNetV2 backbone, built the way ssds.pytorch builds it.\n\n"
    "Examples:\n\n  ssdlite info ssds-voc\n\n  ssdlite info paper-coco --macs",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

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
    if preset not in PRESETS:
        typer.echo(f"error: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}", err=True)
        raise typer.Exit(2)
    import ssdlite_model

    from .complexity import count_macs, params_per_part

    config = getattr(ssdlite_model, PRESETS[preset])()
    try:
        model = ssdlite_model.build_ssdlite(config, backbone_weights)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
