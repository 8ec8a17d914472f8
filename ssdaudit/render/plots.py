"""Matplotlib figures (PNG) for gradient-flow runs: readable on their own, with titles, units and legends."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ssdaudit.training.gradflow import GradFlowRun, LayerStats

_ORPHAN, _DEAD, _OK = "#d62728", "#7f7f7f", "#1f77b4"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    from ssdaudit.core.io import atomic_write

    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    _pyplot().close(fig)
    return path


def _tick_labels(ax: Any, names: list[str], axis: str = "x", max_labels: int = 60) -> None:
    step = max(1, int(np.ceil(len(names) / max_labels)))
    pos = list(range(0, len(names), step))
    if axis == "x":
        ax.set_xticks(pos)
        ax.set_xticklabels([names[i] for i in pos], rotation=90, fontsize=6)
    else:
        ax.set_yticks(pos)
        ax.set_yticklabels([names[i] for i in pos], fontsize=6)


def plot_gradient_flow(layers: list[LayerStats], path: Path, title: str = "Gradient flow") -> Path:
    """The classic chart: max and mean |grad| per layer (log scale); layers without gradient and layers whose
    gradients no optimizer applies (not registered) marked."""
    plt = _pyplot()
    names = [ls.path for ls in layers]
    x = np.arange(len(layers))
    gmax = np.array([ls.grad_max_mean for ls in layers])
    gmean = np.array([ls.grad_mean_abs for ls in layers])
    positive = np.concatenate([gmax[gmax > 0], gmean[gmean > 0]])
    floor = positive.min() / 10 if positive.size else 1e-12
    fig, ax = plt.subplots(figsize=(max(10, len(layers) * 0.09), 5.5))
    colours = [_ORPHAN if not ls.registered else (_DEAD if not ls.reached else _OK) for ls in layers]
    ax.bar(x, np.maximum(gmax, floor), color=colours, alpha=0.35, width=1.0, label="max |grad| (mean over steps)")
    ax.bar(x, np.maximum(gmean, floor), color=colours, alpha=0.95, width=0.6, label="mean |grad| (mean over steps)")
    dead = [i for i, ls in enumerate(layers) if ls.registered and (not ls.reached or ls.grad_max_mean == 0)]
    if dead:
        ax.scatter(dead, [floor * 1.5] * len(dead), marker="x", color="black", zorder=3, label="no gradient (dead)")
    orphans = [i for i, ls in enumerate(layers) if not ls.registered]
    if orphans:
        ax.axvspan(min(orphans) - 0.5, max(orphans) + 0.5, color=_ORPHAN, alpha=0.08)
        ax.bar([0], [0], color=_ORPHAN, label="not registered: gets gradients, optimizer never applies them")
    ax.set_yscale("log")
    ax.set_xlim(-1, len(layers))
    ax.set_xlabel("layer (module holding the parameters, model order)")
    ax.set_ylabel("|gradient| (log scale, parameter units)")
    ax.set_title(title)
    _tick_labels(ax, names)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _heatmap(matrix: np.ndarray, layers: list[LayerStats], steps: np.ndarray, path: Path, title: str, label: str,
             masked_label: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, max(5, len(layers) * 0.06)))
    with np.errstate(divide="ignore", invalid="ignore"):
        data = np.where(matrix > 0, np.log10(np.where(matrix > 0, matrix, 1.0)), np.nan)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#bbbbbb")
    extent = (float(steps[0]) - 0.5, float(steps[-1]) + 0.5, len(layers) - 0.5, -0.5) if len(steps) else None
    im = ax.imshow(data, aspect="auto", cmap=cmap, interpolation="nearest", extent=extent)
    fig.colorbar(im, ax=ax, label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("layer")
    ax.set_title(f"{title}\n(grey: {masked_label})")
    _tick_labels(ax, [ls.path + ("  [not registered]" if not ls.registered else "") for ls in layers], axis="y")
    return _save(fig, path)


def plot_grad_norm_heatmap(layers: list[LayerStats], steps: np.ndarray, path: Path) -> Path:
    matrix = np.stack([ls.grad_norm_steps for ls in layers]) if layers else np.zeros((0, 0))
    return _heatmap(matrix, layers, steps, path, "Per-layer gradient L2 norm over steps",
                    "log10 gradient norm", "no gradient")


def plot_update_ratio(layers: list[LayerStats], steps: np.ndarray, path: Path) -> Path:
    matrix = np.stack([ls.update_ratio_steps for ls in layers]) if layers else np.zeros((0, 0))
    return _heatmap(matrix, layers, steps, path, "Update-to-weight ratio ||w' - w|| / ||w|| per layer and step",
                    "log10 update ratio (about -3 is healthy for SGD)", "never updated by the optimizer")


def plot_gradflow_run(run: GradFlowRun, layers: list[LayerStats], out_dir: Path, title: str = "Gradient flow") -> list[Path]:
    """All three figures of a run into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = [plot_gradient_flow(layers, out_dir / "gradient_flow.png", title)]
    if len(run.steps):
        paths.append(plot_grad_norm_heatmap(layers, run.steps, out_dir / "grad_norm_heatmap.png"))
        paths.append(plot_update_ratio(layers, run.steps, out_dir / "update_ratio.png"))
    return paths
