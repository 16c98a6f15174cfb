"""The loop's report page: one curve per measure, night by night (``<data dir>/reports/loop/``:
``index.html``, ``loop.png`` and ``loop.json`` with every number)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from personalize.report.figures import _plt, png

PANELS: list[tuple[str, list[tuple[str, str]], str]] = [
    (
        "Likes per play of published tracks",
        [("like_rate", "published"), ("baseline_like_rate", "random cluster"),
         ("like_prob", "published, model's P(like)"), ("baseline_like_prob", "random cluster, model's P(like)")],
        "likes / play",
    ),
    ("Drifting listeners: share of true tempo change the profile shows",
     [("follow_share", "same night"), ("follow_share_lag7", "change up to 7 nights before")], "share"),
    ("Profile tempo error (median)", [("steady_tempo_error", "steady"), ("drifting_tempo_error", "drifting")],
     "relative error"),
    ("Steady listeners keeping their cluster id", [("cluster_kept", "kept")], "share"),
    ("Outliers: chance of a like per play (engagement model)",
     [("outlier_personal_like_prob", "tracks written for them"),
      ("outlier_cluster_like_prob", "their playlist's cluster tracks"),
      ("outlier_cluster_alone_like_prob", "a track of their cluster instead (not posted)")],
     "P(like) / play"),
    ("Share of playlist items new tonight", [("new_share", "new")], "share"),
    ("Storage", [("stored_mb", "MIDI + audio"), ("database_mb", "database")], "MB"),
    ("Listeners", [("listeners_around", "around"), ("listeners_active", "active that day")], "listeners"),
]  # fmt: skip


def figure(nights: dict[int, dict[str, Any]]) -> bytes:
    """Every panel of :data:`PANELS` against the night number."""
    plt = _plt()
    fig, axes = plt.subplots(4, 2, figsize=(12, 13))
    xs = sorted(nights)
    for ax, (title, series, unit) in zip(axes.ravel(), PANELS, strict=True):
        for key, label in series:
            ys = [nights[n].get(key) for n in xs]
            pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-", ms=3, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("night")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def summary(nights: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The numbers the page leads with: like-rate against the baseline on every night and its trend, drift
    following, cluster-id stability, outliers, storage."""
    rows = [nights[n] for n in sorted(nights)]
    answered = [r for r in rows if r.get("like_rate") is not None and r.get("baseline_like_rate")]
    ratios = [r["like_rate"] / r["baseline_like_rate"] for r in answered]
    out: dict[str, Any] = {"nights": len(rows)}
    if answered:
        x = np.array([r["night"] for r in answered], dtype=float)
        y = np.array([r["like_rate"] for r in answered])
        out["like_rate_vs_baseline_min"] = round(min(ratios), 3)
        out["like_rate_vs_baseline_median"] = round(float(np.median(ratios)), 3)
        out["nights_at_2x_or_more"] = f"{sum(q >= 2.0 for q in ratios)} of {len(ratios)}"
        out["like_rate_first_last"] = [answered[0]["like_rate"], answered[-1]["like_rate"]]
        if len(x) > 1:
            out["like_rate_trend_per_night"] = round(float(np.polyfit(x, y, 1)[0]), 6)
    for key in ("follow_share", "follow_share_lag7", "steady_tempo_error", "cluster_kept", "new_share"):
        vals = [r[key] for r in rows if r.get(key) is not None]
        if vals:
            out[f"{key}_last"] = vals[-1]
            out[f"{key}_min"] = min(vals)
    if rows and rows[0].get("steady_tempo_error"):
        errs = [r["steady_tempo_error"] for r in rows if r.get("steady_tempo_error") is not None]
        out["steady_error_vs_night0_max"] = round(max(errs) / rows[0]["steady_tempo_error"], 3)
    probs = [r["like_prob"] / r["baseline_like_prob"] for r in answered if r.get("baseline_like_prob")]
    if probs:
        out["like_prob_vs_baseline_min"] = round(min(probs), 3)
    # Outliers hear few tracks of their own a night: pooled over every night, weighted by plays.
    pers = [r for r in rows if r.get("outlier_personal_plays")]
    if pers:
        for kind, plays_key, measures in (
            ("personal", "outlier_personal_plays", ("like_rate", "like_prob")),
            ("cluster", "outlier_cluster_plays", ("like_rate", "like_prob")),
            ("cluster_alone", "outlier_personal_plays", ("like_prob",)),
        ):
            for measure in measures:
                key = f"outlier_{kind}_{measure}"
                pairs = [(r[key], r.get(plays_key) or 1) for r in pers if r.get(key) is not None]
                if pairs:
                    total = sum(w for _, w in pairs)
                    out[f"{key}_pooled"] = round(sum(v * w for v, w in pairs) / total, 4)
        out["outlier_personal_plays"] = int(sum(r["outlier_personal_plays"] for r in pers))
    if rows:
        out["stored_mb_last"] = rows[-1]["stored_mb"]
        out["database_mb_first_last"] = [rows[0]["database_mb"], rows[-1]["database_mb"]]
        if len(rows) > 1:
            out["database_mb_per_night"] = round(
                (rows[-1]["database_mb"] - rows[0]["database_mb"]) / (len(rows) - 1), 3
            )
    return out


def write_report(folder: Path, nights: dict[int, dict[str, Any]], settings: dict[str, Any]) -> Path:
    """Write ``index.html``, ``loop.png`` and ``loop.json`` into ``folder``; returns the page's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "loop.png").write_bytes(figure(nights))
    head = summary(nights)
    (folder / "loop.json").write_text(
        json.dumps({"summary": head, "settings": settings, "nights": nights}, indent=2, default=str)
    )
    columns = sorted({k for m in nights.values() for k in m} - {"night", "date"})
    table = "".join(
        f"<tr><td>{n}</td><td>{html.escape(str(m.get('date')))}</td>"
        + "".join(f"<td>{html.escape(str(m.get(c, '')))}</td>" for c in columns)
        + "</tr>"
        for n, m in sorted(nights.items())
    )
    facts = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in head.items())
    knobs = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in settings.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Night after night</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:2px 5px;font-size:12px}}
table{{border-collapse:collapse}}</style></head><body>
<h1>Night after night: {len(nights)} nights of the closed loop</h1>
<ul>{facts}</ul><h2>Curves</h2><img src="loop.png" alt="loop measures night by night" width="1100">
<h2>Settings</h2><ul>{knobs}</ul>
<h2>Every night</h2><table><tr><th>night</th><th>date</th>{"".join(f"<th>{html.escape(c)}</th>" for c in columns)}</tr>
{table}</table></body></html>"""
    path = folder / "index.html"
    path.write_text(page)
    return path
