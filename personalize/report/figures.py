"""Figures of the nightly report, each drawn with matplotlib (Agg) and returned as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig: Any) -> bytes:
    """Render a figure to PNG bytes and close it (so a long run does not pile up figures)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def cluster_sizes(
    ids: Sequence[int], sizes: Sequence[int], tracks: Sequence[int], labels: Sequence[str]
) -> bytes:
    """Listeners per cluster (bars) with the night's fresh tracks per cluster (second axis)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    x = np.arange(len(ids))
    ax.bar(x, sizes, color="#4C78A8", label="listeners")
    ax.set_xticks(x, [f"c{c}\n{lab}" for c, lab in zip(ids, labels, strict=True)], fontsize=7)
    ax.set_ylabel("listeners")
    ax2 = ax.twinx()
    ax2.plot(x, tracks, "o-", color="#F58518", label="fresh tracks")
    ax2.set_ylabel("fresh tracks tonight")
    ax2.set_ylim(0, max([*tracks, 1]) * 1.25)
    ax.set_title("Taste clusters: size and tonight's tracks")
    return png(fig)


def fidelity(plans: list[dict[str, Any]]) -> bytes:
    """Asked vs measured tempo per generated track, and per-cluster key/instrument/density accuracy."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    done = [p for p in plans if p["status"] == "generated" and p["measured_tempo_bpm"] is not None]
    if done:
        asked = np.array([p["tempo_bpm"] for p in done])
        got = np.array([p["measured_tempo_bpm"] for p in done])
        ok = np.array([bool(p["key_ok"]) for p in done])
        ax1.scatter(asked[ok], got[ok], s=14, color="#54A24B", label="key as asked")
        ax1.scatter(asked[~ok], got[~ok], s=18, color="#E45756", marker="x", label="key missed")
        lo, hi = float(min(asked.min(), got.min())) - 5, float(max(asked.max(), got.max())) + 5
        ax1.plot([lo, hi], [lo, hi], color="#999", lw=1)
        ax1.legend(fontsize=8)
    ax1.set_xlabel("asked tempo (BPM)")
    ax1.set_ylabel("measured tempo (BPM)")
    ax1.set_title("Tempo asked vs measured")
    clusters = sorted({p["cluster_id"] for p in done})
    width = 0.26
    for i, (flag, colour, name) in enumerate(
        (
            ("key_ok", "#4C78A8", "key"),
            ("programs_ok", "#F58518", "instruments"),
            ("density_ok", "#72B7B2", "density"),
        )
    ):
        shares = []
        for c in clusters:
            vals = [p[flag] for p in done if p["cluster_id"] == c and p[flag] is not None]
            shares.append(np.mean(vals) if vals else np.nan)
        ax2.bar(np.arange(len(clusters)) + (i - 1) * width, shares, width, color=colour, label=name)
    ax2.set_xticks(np.arange(len(clusters)), [f"c{c}" for c in clusters])
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("share of tracks as asked")
    ax2.set_title("Control fidelity per cluster")
    ax2.legend(fontsize=8, loc="lower right")
    return png(fig)


def gate_bands(rows: list[dict[str, Any]]) -> bytes:
    """Per texture and metric: the corpus's 5-95 % band as a bar, its median as a tick, and tonight's
    median as a dot (red when outside the band)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1.2))
    for y, r in enumerate(reversed(rows)):
        lo, hi, mid, med = r["corpus 5%"], r["corpus 95%"], r["corpus median"], r["tonight median"]
        span = max(hi - lo, 1e-9)  # each metric on its own axis: 0 at the band's 5 %, 1 at its 95 %
        ax.barh(y, 1.0, left=0.0, color="#DDDDDD", height=0.6)
        ax.plot([(mid - lo) / span] * 2, [y - 0.3, y + 0.3], color="#777")
        if med is not None:
            inside = lo <= med <= hi
            ax.plot(np.clip((med - lo) / span, -0.5, 1.5), y, "o", color="#4C78A8" if inside else "#E45756")
    ax.set_yticks(range(len(rows)), [f"{r['texture']}: {r['metric']}" for r in reversed(rows)], fontsize=7)
    ax.set_xlim(-0.55, 1.55)
    ax.set_xticks([0, 1], ["corpus 5 %", "corpus 95 %"])
    ax.set_title("Tonight's median (dot) against the corpus band (grey), per metric", fontsize=9)
    fig.tight_layout()
    return png(fig)


def stage_timings(stages: list[str], seconds: list[float], statuses: list[str]) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(stages) + 1.2))
    colours = ["#54A24B" if s == "ok" else "#E45756" for s in statuses]
    y = np.arange(len(stages))[::-1]
    ax.barh(y, seconds, color=colours)
    ax.set_yticks(y, stages)
    for yi, s in zip(y, seconds, strict=True):
        ax.text(s, yi, f" {s:.1f} s", va="center", fontsize=8)
    ax.set_xlabel("seconds (per-cluster parts summed)")
    ax.set_title("Stage timings")
    return png(fig)


def piano_roll(pm: Any, title: str) -> bytes:
    """Notes as bars over time, one colour per part (drums as dots), with the song's sections shaded and
    labelled along the top and its chords written along the bottom (from the MIDI's ``section:`` and
    ``chord:`` text events, when it has them)."""
    from matplotlib.collections import LineCollection

    plt = _plt()
    texts = [(float(t.time), str(t.text)) for t in getattr(pm, "text_events", [])]
    sections = [(t, x.removeprefix("section:")) for t, x in texts if x.startswith("section:")]
    chords = [(t, x.removeprefix("chord:")) for t, x in texts if x.startswith("chord:")]
    end = pm.get_end_time()
    fig, ax = plt.subplots(figsize=(12 if sections else 7, 3.2 if sections else 2.6))
    palette = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2")
    pitches = [n.pitch for inst in pm.instruments if not inst.is_drum for n in inst.notes] or [60]
    lo, hi = min(pitches), max(pitches)
    for k, (start, label) in enumerate(sections):
        stop = sections[k + 1][0] if k + 1 < len(sections) else end
        if k % 2 == 0:
            ax.axvspan(start, stop, color="#f2f2f2", zorder=0)
        ax.text(start + 0.3, hi + 3, label, fontsize=7, va="bottom")
    shown = -1e9
    for t, label in chords:
        if t - shown >= 1.5:  # a label per chord change, where there is room for it
            ax.text(t, lo - 7, label, fontsize=6, va="top", color="#555")
            shown = t
    for i, inst in enumerate(pm.instruments):
        if not inst.notes:
            continue
        if inst.is_drum:
            # Drums on a lane of their own under the lowest pitch (their note numbers are not pitches).
            lane = [lo - 3] * len(inst.notes) if sections else [n.pitch for n in inst.notes]
            ax.scatter([n.start for n in inst.notes], lane, s=3, color="#333", label="drums")
            continue
        colour = palette[i % len(palette)]
        segments = [[(n.start, n.pitch), (n.end, n.pitch)] for n in inst.notes]
        ax.add_collection(
            LineCollection(
                segments, colors=colour, linewidths=2.2, label=inst.name or f"program {inst.program}"
            )
        )
    ax.autoscale()
    if sections or chords:
        ax.set_ylim(lo - (12 if chords else 3), hi + 8)
    ax.set_xlabel("seconds")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title, fontsize=9)
    if sections:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        ax.legend(fontsize=7, loc="upper right", ncols=2)
    return png(fig)


def drift(points: list[dict[str, Any]]) -> bytes:
    """Drifting listeners: how far their preferred tempo has moved (in its drift direction) since the world's
    first day, truly and according to their profiles, week by week of history and night by night."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.4))
    dates = [p["date"] for p in points]
    ax.plot(
        dates, [p["true_drift_bpm"] for p in points], "o-", color="#4C78A8", label="true taste (simulator)"
    )
    ax.plot(dates, [p["profile_drift_bpm"] for p in points], "s--", color="#F58518", label="taste profile")
    ax.axhline(0.0, color="#999", lw=1, ls=":", label="a profile that never moves")
    nights = [p["date"] for p in points if p.get("source") == "night"]
    if nights:
        ax.axvspan(nights[0], nights[-1], color="#eee", zorder=0, label="evaluated nights (plays fed back)")
    ax.set_ylabel("tempo moved since day 1 (BPM)")
    ax.set_title("Drifting listeners: true tempo shift vs what their profiles show")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return png(fig)
