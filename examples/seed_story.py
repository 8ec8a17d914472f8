"""The seed story end to end (`make demo`): the three-week bug found in seconds.

1. Build the reference SSDLite, the buggy variant (backbone in a plain list) and the fixed one (nn.ModuleList).
2. `ssdaudit params` on each against the reference: the buggy one falls short by exactly the backbone (R001).
3. Train buggy and fixed for the same short budget on synthetic shapes with the gradient-flow monitor on.
4. Save, reload into fresh instances, evaluate: the fixed model's mAP survives; the buggy one's collapses.
5. `ssdaudit diff` of the two checkpoints: the 312 backbone entries the buggy one never saved.
6. Write out/seed_story/report.md with the tables and the figures.

Run: python examples/seed_story.py [--minutes 3] [--out out/seed_story]   (about 6.5 minutes on 2 CPU cores)
     python examples/seed_story.py --quick     (every stage on tiny models and data, well under a minute; the test suite
                                                runs it: the audit figures are the full-size ones, the training ones not)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import buggy_plain_list  # noqa: E402
import fixed_modulelist  # noqa: E402

from ssdlite_model import build_ssdlite, ssds_voc  # noqa: E402
from ssdlite_model.train import CHECKPOINT, Trainer, TrainSettings  # noqa: E402

# Reaches mAP@0.5 0.86 in 10 minutes here (benchmarks/train_synthetic.py); the demo's 3 minutes give about 0.5.
RECIPE = dict(data="synthetic", image_size=128, width_mult=0.5, n_train=2000, n_val=200, batch_size=32,
              optimizer="adamw", lr=2e-3, clip_grad=10.0, epochs=60, warmup_epochs=1.0, eval_every=2)
# epochs is a cap: the time budget ends training (the schedule runs on max(step, time) progress).
# --quick: the same stages and code paths in seconds (64 px, width 0.35, a few dozen images, one epoch).
QUICK_RECIPE = dict(RECIPE, image_size=64, width_mult=0.35, n_train=16, n_val=4, batch_size=8, epochs=1, eval_every=1,
                    eval_batch_size=4)


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def train_variant(name: str, factory, out: Path, minutes: float, recipe: dict, gradflow: bool = True) -> dict:
    """Train one variant under the time budget, then reload its checkpoint into a fresh instance and evaluate."""
    from ssdlite_model.evaluate import evaluate_model

    run_dir = out / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    settings = TrainSettings(**recipe, out=str(run_dir), time_budget_min=minutes, gradflow=gradflow,
                             progress=sys.stderr.isatty())
    trainer = Trainer(settings, model_factory=factory)
    records = trainer.fit()
    trained_map = records[-1]["map50"]
    state = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    torch.manual_seed(12345)  # a new process: nothing ties its random init to the training run's
    fresh = factory(trainer.config)
    fresh.load_state_dict(state["model"])  # strict: the buggy state_dict lacks the backbone on both sides
    reloaded_map = evaluate_model(fresh, trainer.val_set).map50
    return {"name": name, "trainer": trainer, "records": records, "trained_map": trained_map,
            "reloaded_map": reloaded_map, "run_dir": run_dir, "fresh": fresh}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per variant (wall time, data loading included)")
    parser.add_argument("--out", type=Path, default=Path("out/seed_story"))
    parser.add_argument("--quick", action="store_true", help="tiny models and data: every stage in well under a minute")
    args = parser.parse_args()
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    recipe = QUICK_RECIPE if args.quick else RECIPE
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()

    from ssdaudit import audit_params

    say("1/6 building the reference SSDLite (ssds-voc), the buggy variant and the fixed one")
    reference = build_ssdlite(ssds_voc())
    audits = {}
    for name, module in (("buggy", buggy_plain_list), ("fixed", fixed_modulelist)):
        say(f"2/6 ssdaudit params examples/{Path(module.__file__).name} --reference ssds-voc")
        report = audit_params(module.build_model(), reference, module.example_input(), target=module.__file__,
                              reference_name="ssds-voc")
        audits[name] = report
        errors = [f for f in report.findings if f.severity.value == "error"]
        for f in errors:
            say(f"   {f.rule} {f.name} at '{f.path}': {f.params:,} parameters, {f.location}; fix: {f.fix}")
        say(f"   registered {report.registered_params:,} (reference {report.reference.params:,}), "
            f"checkpoint {report.checkpoint_bytes:,} bytes" + ("" if errors else ": clean"))

    say(f"3/6 training both for {args.minutes} minutes each on synthetic shapes (gradflow monitor on)")
    results = {}
    for name, factory in (("buggy", buggy_plain_list.PlainListSSDLite), ("fixed", None)):
        from ssdlite_model.detector import SSDLite

        say(f"   training {name} ...")
        results[name] = train_variant(name, factory or SSDLite, out, args.minutes, recipe)
        r = results[name]
        say(f"   {name}: {r['records'][-1]['epoch']} epochs, loss {r['records'][-1]['loss']:.2f}, "
            f"mAP@0.5 {r['trained_map']:.3f}; after reload {r['reloaded_map']:.3f}")

    say("4/6 gradient flow of the buggy run (ssdaudit gradflow out/seed_story/runs/buggy)")
    from ssdaudit.training.gradflow import analyse_gradflow, read_gradflow_log
    from ssdaudit.render.plots import plot_gradflow_run

    gf_run = read_gradflow_log(results["buggy"]["run_dir"])
    gf_findings, gf_layers = analyse_gradflow(gf_run)
    plots = plot_gradflow_run(gf_run, gf_layers, out / "gradflow_buggy", "Gradient flow: buggy SSDLite (backbone in a plain list)")
    g001 = [f for f in gf_findings if f.rule == "G001"]
    for f in g001:
        say(f"   {f.rule} {f.name} at '{f.path}': {f.params:,} parameters get gradients the optimizer never applies")
    fixed_gf = analyse_gradflow(read_gradflow_log(results["fixed"]["run_dir"]))[0]
    fixed_errors = [f for f in fixed_gf if f.severity.value == "error"]
    say(f"   fixed run: {len(fixed_errors)} gradflow errors")

    say("5/6 ssdaudit diff runs/fixed/last.pth runs/buggy/last.pth")
    from ssdaudit.checkpoints.formats import open_checkpoint
    from ssdaudit.checkpoints.diff import diff_checkpoints

    diff = diff_checkpoints(open_checkpoint(results["fixed"]["run_dir"] / CHECKPOINT),
                            open_checkpoint(results["buggy"]["run_dir"] / CHECKPOINT))
    c001 = [f for f in diff.findings if f.rule == "C001"]
    for f in c001:
        say(f"   {f.rule} {f.path}: {f.message}")

    say("6/6 figures and report")
    from ssdlite_model.plots import plot_training

    plot_training({}, out / "loss_curves.png", "Seed story: same budget, buggy vs fixed",
                  compare={"fixed (nn.ModuleList)": results["fixed"]["records"], "buggy (plain list)": results["buggy"]["records"]})
    detections = draw_grid(results, out / "detections.png")
    write_report(out, audits, results, g001, fixed_errors, diff, c001, plots, detections, time.perf_counter() - start,
                 args.minutes, recipe)
    say(f"done in {time.perf_counter() - start:.0f} s: {out / 'report.md'}")


def draw_grid(results: dict, path: Path, n: int = 4) -> Path:
    """Rows: fixed and buggy after reload; columns: validation images; titles and a legend on the figure itself."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.io import decode_png

    from ssdaudit.core.io import atomic_write
    from ssdlite_model.drawing import draw_detections

    val = results["fixed"]["trainer"].val_set
    names = results["fixed"]["trainer"].config.class_names
    fig, axes = plt.subplots(2, n, figsize=(3 * n, 6.6))
    for row, (key, label) in enumerate((("fixed", "fixed (nn.ModuleList)"), ("buggy", "buggy (plain list)"))):
        model = results[key]["fresh"].eval()
        for col in range(n):
            image, target = val[col]
            with torch.no_grad():
                det = model.detect(image[None])[0]
            # drawn at 2x so that labels stay readable on 128-pixel images
            big = torch.nn.functional.interpolate(image[None], scale_factor=2, mode="bilinear", align_corners=False)[0]
            png = draw_detections(big, {**det, "boxes": det["boxes"] * 2}, names, score=0.4,
                                  truth={**target, "boxes": target["boxes"] * 2})
            ax = axes[row, col]
            ax.imshow(decode_png(torch.frombuffer(bytearray(png), dtype=torch.uint8)).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            shown = int((det["scores"] >= 0.4).sum())
            ax.set_title(f"{label}\n{shown} detections >= 0.4" if col == 0 else f"{shown} detections >= 0.4", fontsize=9)
    fig.suptitle("Detections after save + reload (validation images, score >= 0.4, coloured by class; white: ground truth)",
                 fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path


def _short(location) -> str:
    """``file.py:LINE`` of a finding's ``Location`` (the file's name only), or ``?`` when the finding has none."""
    if location is None:
        return "?"
    return f"{Path(location.path).name}:{location.line}" if location.line is not None else Path(location.path).name


def write_report(out, audits, results, g001, fixed_errors, diff, c001, plots, detections, seconds, minutes, recipe) -> None:
    from ssdaudit.core.io import atomic_write_text

    b, f = audits["buggy"], audits["fixed"]
    rb, rf = results["buggy"], results["fixed"]
    r001 = [x for x in b.findings if x.rule == "R001"]
    lines = [
        "# The seed story: an SSDLite whose backbone sat in a plain list",
        "",
        f"Generated by `examples/seed_story.py` in {seconds / 60:.1f} minutes.",
        "",
        "## 1. `ssdaudit params` against the ssds.pytorch reference (4,577,792 parameters)",
        "",
        "| model | registered parameters | short of the reference | checkpoint bytes | findings |",
        "|---|---:|---:|---:|---|",
        f"| buggy (plain list) | {b.registered_params:,} | {b.reference.params - b.registered_params:,} | {b.checkpoint_bytes:,} | "
        + ", ".join(f"{x.rule} at `{x.path}` ({x.params:,} params, {_short(x.location)})" for x in r001) + " |",
        f"| fixed (nn.ModuleList) | {f.registered_params:,} | {f.reference.params - f.registered_params:,} | {f.checkpoint_bytes:,} | none |",
        "",
        f"The buggy model falls short by exactly the MobileNetV2 backbone: {b.reference.params - b.registered_params:,} parameters, "
        f"and its checkpoint by {f.checkpoint_bytes - b.checkpoint_bytes:,} bytes. Fix: `{r001[0].fix if r001 else ''}`.",
        "",
        f"## 2. Training, same budget ({minutes} minutes each, synthetic shapes, {recipe['image_size']} px, width "
        f"{recipe['width_mult']}, {recipe['n_train']} images, AdamW {recipe['lr']:g})",
        "",
        "![loss curves](loss_curves.png)",
        "",
        "| model | epochs | final loss | mAP@0.5 after training | mAP@0.5 after save + reload |",
        "|---|---:|---:|---:|---:|",
        f"| fixed | {rf['records'][-1]['epoch']} | {rf['records'][-1]['loss']:.2f} | {rf['trained_map']:.3f} | {rf['reloaded_map']:.3f} |",
        f"| buggy | {rb['records'][-1]['epoch']} | {rb['records'][-1]['loss']:.2f} | {rb['trained_map']:.3f} | {rb['reloaded_map']:.3f} |",
        "",
        "The buggy model learns only with its heads on a frozen random backbone, and after a reload its backbone comes back "
        "with new random weights (it was never saved), so its mAP collapses.",
        "",
        "## 3. `ssdaudit gradflow` on the buggy run",
        "",
    ]
    lines += [f"- **{x.rule} {x.name}** at `{x.path}`: {x.message}" for x in g001]
    lines += [f"- fixed run: {len(fixed_errors)} gradient-flow errors", ""]
    lines += [f"![{p.stem}](gradflow_buggy/{p.name})" for p in plots]
    lines += [
        "",
        "## 4. `ssdaudit diff runs/fixed/last.pth runs/buggy/last.pth`",
        "",
        f"{len(diff.only_in_a)} tensors only in the fixed checkpoint, {len(diff.only_in_b)} only in the buggy one.",
        "",
    ]
    lines += [f"- **{x.rule} {x.name}** `{x.path}`: {x.message}" for x in c001]
    lines += [
        "",
        "## 5. Detections after reload (top row fixed, bottom row buggy; ground truth in white)",
        "",
        f"![detections]({detections.name})",
        "",
    ]
    atomic_write_text(out / "report.md", "\n".join(lines))


if __name__ == "__main__":
    main()
