"""Plots of a run date's taste profiles and clusters (PNG): a 2-D taste map of listeners coloured by
cluster, per-cluster tempo, key and instrument charts, and cluster sizes across dates by stable id.

:func:`write_taste_plots` writes them into a folder and returns their paths, for the command line and for
the nightly report page to embed.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sqlalchemy import select

from personalize.context import Context
from personalize.db.models import Cluster, TasteProfile
from personalize.music.gm import FAMILIES
from personalize.profile.vector import I_FAMILY0, key_name_of_index, load_space

MAP_SAMPLE = 20_000  # listeners drawn on the taste map


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _colors(ids: list[int]) -> dict[int, Any]:
    # tab10's ten hues tell clusters apart better than tab20's light/dark pairs while there are few.
    n = 10 if len(ids) <= 10 else 20
    cmap = plt.get_cmap(f"tab{n}")
    return {cid: cmap(i % n) for i, cid in enumerate(sorted(ids))}


class _TasteData:
    """What the plots of one run date draw from, loaded once."""

    def __init__(self, ctx: Context, run_date: dt.date) -> None:
        self.run_date = run_date
        self.space = load_space(ctx, run_date)
        self.prof, self.clusters, self.history = _load(ctx, run_date)
        self.ids = self.clusters["cluster_id"].tolist()
        self.colors = _colors(sorted(set(self.ids) | set(self.history["cluster_id"])))


def _load(ctx: Context, run_date: dt.date) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    with ctx.engine.connect() as conn:
        prof = pd.DataFrame(
            conn.execute(
                select(
                    TasteProfile.cluster_id,
                    TasteProfile.status,
                    TasteProfile.tempo_bpm,
                    TasteProfile.vector,
                    TasteProfile.key_weights,
                ).where(TasteProfile.run_date == run_date, TasteProfile.status != "cold")
            ).all(),
            columns=["cluster_id", "status", "tempo_bpm", "vector", "key_weights"],
        )
        clusters = pd.DataFrame(
            conn.execute(
                select(
                    Cluster.cluster_id,
                    Cluster.size,
                    Cluster.tempo_bpm,
                    Cluster.key_name,
                    Cluster.top_families,
                    Cluster.centroid,
                )
                .where(Cluster.run_date == run_date)
                .order_by(Cluster.cluster_id)
            ).all(),
            columns=["cluster_id", "size", "tempo_bpm", "key_name", "top_families", "centroid"],
        )
        history = pd.DataFrame(
            conn.execute(select(Cluster.run_date, Cluster.cluster_id, Cluster.size)).all(),
            columns=["run_date", "cluster_id", "size"],
        )
    return prof, clusters, history


def taste_map_figure(data: _TasteData) -> plt.Figure:
    """Listeners on the first two principal components of the standardized taste space, by cluster."""
    from sklearn.decomposition import PCA

    prof, clusters, ids, colors, space, run_date = (
        data.prof,
        data.clusters,
        data.ids,
        data.colors,
        data.space,
        data.run_date,
    )
    rng = np.random.default_rng(0)
    vectors = np.array([_json(v) for v in prof["vector"]], dtype=float).reshape(len(prof), -1)
    sample = rng.choice(len(prof), size=min(len(prof), MAP_SAMPLE), replace=False)
    Z = space.transform(vectors[sample])
    pca = PCA(n_components=2, random_state=0).fit(Z)
    xy = pca.transform(Z)
    cxy = pca.transform(space.transform(np.array([_json(c) for c in clusters["centroid"]], dtype=float)))
    fig, ax = plt.subplots(figsize=(8, 6.5))
    labels = prof["cluster_id"].to_numpy()[sample]
    for cid in ids:
        m = labels == cid
        ax.scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.35, color=colors[cid], label=f"#{cid}")
    for (x, y), row in zip(cxy, clusters.itertuples(), strict=True):
        ax.annotate(
            f"#{row.cluster_id} {row.tempo_bpm:.0f} BPM\n{row.key_name}",
            (x, y),
            fontsize=8,
            ha="center",
            weight="bold",
            bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8},
        )
    var = pca.explained_variance_ratio_
    ax.set(
        title=f"Taste map {run_date}: {len(prof)} listeners with history, {len(ids)} clusters",
        xlabel=f"PC1 ({var[0]:.0%} of variance)",
        ylabel=f"PC2 ({var[1]:.0%})",
    )
    ax.legend(markerscale=4, fontsize=7, loc="best", ncol=2)
    return fig


def tempo_figure(data: _TasteData) -> plt.Figure:
    """Members' preferred tempo per cluster."""
    prof, ids, colors, run_date = data.prof, data.ids, data.colors, data.run_date
    fig, ax = plt.subplots(figsize=(8, 4))
    data = [prof.loc[prof["cluster_id"] == cid, "tempo_bpm"].dropna().to_numpy() for cid in ids]
    box = ax.boxplot([d if len(d) else [np.nan] for d in data], patch_artist=True, showfliers=False)
    for patch, cid in zip(box["boxes"], ids, strict=True):
        patch.set_facecolor(colors[cid])
    ax.set_xticks(range(1, len(ids) + 1), [f"#{c}" for c in ids])
    ax.set(title=f"Preferred tempo per cluster ({run_date})", xlabel="cluster", ylabel="tempo (BPM)")
    return fig


def keys_figure(data: _TasteData) -> plt.Figure:
    """Share of members' listening weight on each of the 24 keys, per cluster."""
    prof, ids, run_date = data.prof, data.ids, data.run_date
    key_w = np.zeros((len(ids), 24))
    for row in prof.itertuples():
        if row.key_weights is not None and row.cluster_id in ids:
            key_w[ids.index(row.cluster_id)] += np.asarray(_json(row.key_weights), dtype=float)
    key_w /= np.clip(key_w.sum(axis=1, keepdims=True), 1e-12, None)
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(ids) + 1.8))
    im = ax.imshow(key_w, aspect="auto", cmap="magma_r", vmin=0)
    ax.set_xticks(
        range(24),
        [key_name_of_index(i).replace(" major", "").replace(" minor", "m") for i in range(24)],
        fontsize=8,
    )
    ax.set_yticks(range(len(ids)), [f"#{c}" for c in ids])
    ax.set(title=f"Key preference per cluster ({run_date}; 'm' = minor)", xlabel="key", ylabel="cluster")
    fig.colorbar(im, ax=ax, label="share of listening weight")
    return fig


def families_figure(data: _TasteData) -> plt.Figure:
    """Instrument-family shares of each cluster's centroid, stacked."""
    clusters, ids, run_date = data.clusters, data.ids, data.run_date
    fam = np.array([_json(c)[I_FAMILY0:] for c in clusters["centroid"]], dtype=float)
    used = np.flatnonzero(fam.max(axis=0) >= 0.02)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(ids) + 1.8))
    left = np.zeros(len(ids))
    cmap = plt.get_cmap("tab20")
    for n, j in enumerate(used):
        ax.barh(range(len(ids)), fam[:, j], left=left, color=cmap(n % 20), label=FAMILIES[j])
        left += fam[:, j]
    ax.set_yticks(range(len(ids)), [f"#{c}" for c in ids])
    ax.set(title=f"Instrument families per cluster ({run_date})", xlabel="share of parts heard", xlim=(0, 1))
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    return fig


def sizes_figure(data: _TasteData) -> plt.Figure:
    """Cluster sizes across run dates by stable id: one line per cluster an analyst can follow."""
    history, colors, run_date = data.history, data.colors, data.run_date
    fig, ax = plt.subplots(figsize=(8, 4))
    for cid, grp in history.sort_values("run_date").groupby("cluster_id"):
        ax.plot(
            pd.to_datetime(grp["run_date"]),
            grp["size"],
            marker="o",
            ms=3,
            color=colors.get(cid),
            label=f"#{cid}",
        )
    ax.axvline(pd.Timestamp(run_date), color="grey", lw=0.8, ls="--")
    ax.set(title="Cluster sizes by stable id", xlabel="run date", ylabel="listeners")
    ax.legend(fontsize=7, ncol=2)
    fig.autofmt_xdate()
    return fig


FIGURES = {
    "taste_map.png": taste_map_figure,
    "cluster_tempo.png": tempo_figure,
    "cluster_keys.png": keys_figure,
    "cluster_families.png": families_figure,
    "cluster_sizes.png": sizes_figure,
}


def write_taste_plots(ctx: Context, run_date: dt.date, out_dir: Path) -> list[Path]:
    """Write the taste plots of ``run_date`` into ``out_dir``; returns the PNG paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = _TasteData(ctx, run_date)
    return [_save(draw(data), out_dir / name) for name, draw in FIGURES.items()]


def taste_map_png(ctx: Context, run_date: dt.date) -> bytes:
    """The taste map alone, as PNG bytes (for pages that embed it)."""
    import io

    buf = io.BytesIO()
    fig = taste_map_figure(_TasteData(ctx, run_date))
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
