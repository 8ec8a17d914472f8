"""Training figures: loss parts and mAP per epoch (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_training(records: list[dict[str, Any]], path: str | Path, title: str = "SSDLite training",
                  compare: dict[str, list[dict[str, Any]]] | None = None) -> Path:
    """Left: MultiBox loss per step (light) and per epoch (bold), loc and conf parts. Right: mAP@0.5 per epoch.

    ``compare`` maps a label to another run's records, drawn on the same axes (the seed story: buggy vs fixed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssdaudit.core.io import atomic_write

    runs = {"": records} if compare is None else compare
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(12, 4.5))
    for (label, recs), colour in zip(runs.items(), ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")):
        prefix = f"{label}: " if label else ""
        steps, per_step = [], []
        for r in recs:
            n = len(r.get("losses", []))
            first = r["step"] - n
            steps += list(range(first + 1, r["step"] + 1))
            per_step += r.get("losses", [])
        if per_step:
            ax_loss.plot(steps, per_step, color=colour, alpha=0.25, linewidth=0.8)
        ax_loss.plot([r["step"] for r in recs], [r["loss"] for r in recs], "o-", color=colour, label=f"{prefix}total (epoch mean)")
        if compare is None:
            ax_loss.plot([r["step"] for r in recs], [r["loc"] for r in recs], "s--", color="#ff7f0e", label="loc (smooth L1)")
            ax_loss.plot([r["step"] for r in recs], [r["conf"] for r in recs], "^--", color="#2ca02c", label="conf (cross-entropy)")
        with_map = [r for r in recs if "map50" in r]
        if with_map:
            ax_map.plot([r["epoch"] for r in with_map], [r["map50"] for r in with_map], "o-", color=colour,
                        label=f"{prefix}mAP@0.5 (VOC all-point)")
            ax_map.plot([r["epoch"] for r in with_map], [r["coco_map"] for r in with_map], "x:", color=colour,
                        label=f"{prefix}COCO mAP@[.5:.95]")
    ax_loss.set_xlabel("training step")
    ax_loss.set_ylabel("MultiBox loss (per positive prior)")
    ax_loss.set_yscale("log")
    ax_loss.set_title("Loss (light: per step)")
    ax_loss.legend(fontsize=8)
    ax_loss.grid(alpha=0.3)
    ax_map.set_xlabel("epoch")
    ax_map.set_ylabel("mean average precision (0..1)")
    ax_map.set_ylim(0, 1)
    ax_map.set_title("Validation mAP")
    ax_map.legend(fontsize=8)
    ax_map.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path
