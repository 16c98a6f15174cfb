"""The music evaluation's figure: every metric, corpus vs generated vs random vs Markov, per texture."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from personalize.music.metrics import METRICS
from personalize.music.score import TEXTURES

PLOTTED_SYSTEMS = ("corpus", "generated", "random_in_scale", "markov")
COLORS = {"corpus": "#4c72b0", "generated": "#dd8452", "random_in_scale": "#8c8c8c", "markov": "#55a868"}


def plot_metrics(measured: dict[str, dict[str, list]], path: Path) -> Path:
    """One panel per metric (performance metrics left out: constant in every system today): a box per
    system within each texture group, or the share of pieces for the yes/no metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m for m in METRICS if m.family != "performance"]
    cols = 4
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.9 * rows), squeeze=False)
    systems = [s for s in PLOTTED_SYSTEMS if any(s in measured[t] for t in TEXTURES)]
    width = 0.8 / len(systems)
    for ax, metric in zip(axes.ravel(), shown, strict=False):
        for k, system in enumerate(systems):
            # One call per system and panel: its three texture groups side by side.
            positions, samples = [], []
            for g, texture in enumerate(TEXTURES):
                vals = np.array(
                    [x.values[metric.name] for x in measured[texture].get(system, [])], dtype=float
                )
                vals = vals[np.isfinite(vals)]
                if len(vals):
                    positions.append(g + (k - (len(systems) - 1) / 2) * width)
                    samples.append(vals)
            if not samples:
                continue
            if metric.binary:
                ax.bar(positions, [v.mean() for v in samples], width * 0.9, color=COLORS[system])
            else:
                box = ax.boxplot(
                    samples, positions=positions, widths=width * 0.85, patch_artist=True, showfliers=False
                )
                for patch in box["boxes"]:
                    patch.set_facecolor(COLORS[system])
                for line in box["medians"]:
                    line.set_color("black")
        ax.set_xticks(range(len(TEXTURES)), TEXTURES, fontsize=8)
        ax.set_xlim(-0.5, len(TEXTURES) - 0.5)
        ax.set_title(metric.name + (" (share of pieces)" if metric.binary else ""), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[s]) for s in systems]
    fig.legend(handles, systems, loc="lower right", fontsize=9, ncol=len(systems))
    fig.suptitle(
        "Music metrics: held-out corpus vs generated vs random-in-scale vs Markov chain", fontsize=11
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
