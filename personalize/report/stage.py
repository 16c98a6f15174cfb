"""The report stage: one self-contained HTML page per run date (``<data_dir>/reports/<date>/index.html``)
with the taste map, cluster sizes, control fidelity, quality metrics against the corpus, stage timings,
a few piano rolls with audio players, example playlists and, when the playlist evaluation has run, the
outcome and the drift figure.

Figures are embedded as PNG data; audio is linked relative to the page when storage is a local folder
(embedded otherwise). A rerun rewrites the same single file.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from personalize.context import Context
from personalize.db.models import Cluster, Playlist, PlaylistItem, TasteProfile, Track, TrackPlan
from personalize.report import figures

log = logging.getLogger(__name__)

N_PIANO_ROLLS = 4
N_EXAMPLE_PLAYLISTS = 3
N_QUALITY_TRACKS = 120  # tracks measured for the quality section (a sample on big nights)


def report_dir(ctx: Context, run_date: dt.date) -> Path:
    return Path(ctx.settings.data_dir) / "reports" / run_date.isoformat()


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p class=muted>no rows</p>"
    columns = columns or list(rows[0])

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _view(ctx: Context, name: str, run_date: dt.date) -> list[dict[str, Any]]:
    with ctx.engine.connect() as conn:
        rows = (
            conn.execute(text(f"SELECT * FROM {name} WHERE run_date = :d"), {"d": run_date}).mappings().all()
        )
    return [dict(r) for r in rows]


# --- Sections --------------------------------------------------------------------------------------------


def _taste_map(ctx: Context, run_date: dt.date) -> str:
    from personalize.report.taste import taste_map_png

    try:
        return _img(taste_map_png(ctx, run_date), "taste map")
    except Exception as exc:  # a figure must not take the night's report down with it
        log.warning("taste map failed: %s", exc)
        return f"<p class=muted>taste map failed: {html.escape(str(exc))}</p>"


def _quality(ctx: Context, tracks: list[Track]) -> tuple[str, dict[str, Any]]:
    """Tonight's tracks on the metrics that tell music from noise, per texture, beside the corpus band the
    verification gate holds (``models/music_gate.json``: no corpus needed at run time)."""
    from personalize.music.gate import MusicGate, against_corpus
    from personalize.music.score import score_from_midi
    from personalize.render.sanitize import load_midi

    try:
        gate = MusicGate.load()
    except (FileNotFoundError, ValueError) as exc:
        return f"<p class=muted>no music gate to compare with ({html.escape(str(exc))})</p>", {}
    verdicts = []
    for t in tracks[:N_QUALITY_TRACKS]:
        if not t.midi_uri or t.key_pc is None:
            continue
        try:
            pm, _ = load_midi(ctx.storage.get_bytes(t.midi_uri))
            verdicts.append(gate.judge(score_from_midi(pm), int(t.key_pc), str(t.mode)))
        except Exception as exc:  # one unreadable track must not take the report down
            log.warning("quality of %s skipped: %s", t.track_id, exc)
    if not verdicts:
        return "<p class=muted>no generated tracks to measure yet</p>", {}
    table = against_corpus(verdicts, gate)
    rows = []
    for texture, entry in table.items():
        for name, r in entry["metrics"].items():
            med = r["tracks_median"]
            inside = med is not None and r["corpus_p5"] <= med <= r["corpus_p95"]
            rows.append(
                {"texture": texture, "metric": name, "tonight median": med, "corpus 5%": r["corpus_p5"],
                 "corpus median": r["corpus_median"], "corpus 95%": r["corpus_p95"],
                 "inside band": "yes" if inside else "NO"}
            )  # fmt: skip
    passed = {texture: entry["passed_share"] for texture, entry in table.items()}
    summary = ", ".join(f"{t}: {share:.0%} of {table[t]['tracks']}" for t, share in passed.items())
    body = (
        f"<p>Tracks the music gate passes, by texture: {html.escape(summary)}</p>"
        + _img(figures.gate_bands(rows), "tonight's tracks against the corpus bands")
        + _table(rows)
    )
    return body, {"gate_passed": passed}


def _audio_tag(ctx: Context, uri: str, page_dir: Path) -> str:
    path = Path(uri)
    if path.is_absolute() and path.is_file():
        rel = os.path.relpath(path, page_dir)
        return f'<audio controls preload="none" src="{html.escape(rel)}"></audio>'
    data = ctx.storage.get_bytes(uri)
    mime = "audio/ogg"
    return (
        f'<audio controls preload="none" src="data:{mime};base64,{base64.b64encode(data).decode()}"></audio>'
    )


def _piano_rolls(ctx: Context, tracks: list[Track], page_dir: Path) -> str:
    from personalize.render.sanitize import load_midi

    by_cluster: dict[int, Track] = {}
    for t in sorted(tracks, key=lambda t: t.track_id):
        if t.audio_uri and t.midi_uri and t.cluster_id not in by_cluster:
            by_cluster[t.cluster_id] = t
    parts = []
    for t in list(by_cluster.values())[:N_PIANO_ROLLS]:
        try:
            pm, _ = load_midi(ctx.storage.get_bytes(t.midi_uri))
            roll = _img(figures.piano_roll(pm, f"{t.track_id}: {t.title}"), f"piano roll of {t.track_id}")
            audio = _audio_tag(ctx, t.audio_uri, page_dir)
        except Exception as exc:
            log.warning("piano roll of %s failed: %s", t.track_id, exc)
            continue
        asked = t.conditioning or {}
        parts.append(
            f"<div class=track><h3>{html.escape(t.title)}</h3>{roll}<br>{audio}"
            f"<p class=muted>asked: {html.escape(json.dumps({k: asked.get(k) for k in ('key_pc', 'mode', 'tempo_bpm', 'meter', 'density_bin', 'programs')}))}"
            f"<br>loudness {t.loudness_lufs if t.loudness_lufs is not None else float('nan'):.1f} LUFS, "
            f"true peak {t.true_peak_dbtp if t.true_peak_dbtp is not None else float('nan'):.1f} dBTP, "
            f"{t.duration_s:.0f} s</p></div>"
        )
    return "".join(parts) or "<p class=muted>no rendered tracks tonight</p>"


def _example_playlists(ctx: Context, run_date: dt.date) -> str:
    with ctx.sessions() as session:
        ids = session.execute(
            select(Playlist.id, Playlist.listener_id)
            .where(Playlist.run_date == run_date, Playlist.status == "published")
            .order_by(Playlist.listener_id)
            .limit(N_EXAMPLE_PLAYLISTS)
        ).all()
        out = []
        for pid, listener_id in ids:
            items = session.execute(
                select(PlaylistItem.position, PlaylistItem.track_id, PlaylistItem.score, PlaylistItem.reason)
                .where(PlaylistItem.playlist_id == pid)
                .order_by(PlaylistItem.position)
            ).all()
            prof = session.execute(
                select(TasteProfile.tempo_bpm, TasteProfile.key_name, TasteProfile.top_families).where(
                    TasteProfile.listener_id == listener_id, TasteProfile.run_date == run_date
                )
            ).first()
            who = (
                f"{listener_id}: about {prof.tempo_bpm:.0f} BPM, {prof.key_name}, {prof.top_families}"
                if prof and prof.tempo_bpm
                else listener_id
            )
            rows = [
                {"#": i.position, "track": i.track_id, "score": i.score, "reason": i.reason} for i in items
            ]
            out.append(f"<h3>{html.escape(who)}</h3>{_table(rows)}")
    return "".join(out) or "<p class=muted>no published playlists</p>"


CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{margin-bottom:0} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0} td,th{border:1px solid #ddd;padding:3px 7px}
th{background:#f4f4f4} img{max-width:100%} .muted{color:#777} .track{margin-bottom:1.2em}
.kpi{display:inline-block;margin:.4em 1.4em .4em 0} .kpi b{font-size:1.5em;display:block}
"""


def build_html(ctx: Context, run_date: dt.date, page_dir: Path) -> tuple[str, dict[str, Any]]:
    from personalize.runs import stage_timings

    with ctx.sessions() as session:
        clusters = (
            session.execute(select(Cluster).where(Cluster.run_date == run_date).order_by(Cluster.cluster_id))
            .scalars()
            .all()
        )
        plans = [
            {c: getattr(p, c) for c in ("cluster_id", "status", "tempo_bpm", "measured_tempo_bpm", "key_ok",
                                         "programs_ok", "density_ok")}
            for p in session.execute(select(TrackPlan).where(TrackPlan.run_date == run_date)).scalars()
        ]  # fmt: skip
        tracks = (
            session.execute(select(Track).where(Track.source == "generated", Track.run_date == run_date))
            .scalars()
            .all()
        )
    gen = _view(ctx, "v_generation_daily", run_date)
    cov = _view(ctx, "v_playlist_coverage", run_date)
    fid = _view(ctx, "v_fidelity_by_cluster", run_date)
    g = gen[0] if gen else {}
    c = cov[0] if cov else {}
    kpis = {
        "listeners": c.get("listeners", 0),
        "clusters": len(clusters),
        "tracks made": g.get("tracks_generated", 0),
        "tracks failed": g.get("tracks_failed", 0),
        "tracks rendered": g.get("tracks_rendered", 0),
        "playlists published": c.get("listeners_with_playlist", 0),
        "coverage": f"{100 * float(c.get('coverage') or 0):.1f} %",
    }
    sections: list[tuple[str, str]] = []
    sections.append(("Taste map", _taste_map(ctx, run_date)))
    per_cluster_tracks = {cl.cluster_id: 0 for cl in clusters}
    for p in plans:
        per_cluster_tracks[p["cluster_id"]] = per_cluster_tracks.get(p["cluster_id"], 0) + 1
    if clusters:
        sizes_png = figures.cluster_sizes(
            [cl.cluster_id for cl in clusters],
            [cl.size for cl in clusters],
            [per_cluster_tracks.get(cl.cluster_id, 0) for cl in clusters],
            [f"{cl.tempo_bpm:.0f} BPM {cl.key_name}" for cl in clusters],
        )
        rows = [
            {"cluster": cl.cluster_id, "listeners": cl.size, "tempo BPM": cl.tempo_bpm, "key": cl.key_name,
             "top families": cl.top_families, "density notes/s": cl.density, "new": cl.is_new,
             "tracks tonight": per_cluster_tracks.get(cl.cluster_id, 0)}
            for cl in clusters
        ]  # fmt: skip
        sections.append(("Clusters", _img(sizes_png, "cluster sizes") + _table(rows)))
    if plans:
        sections.append(("Control fidelity", _img(figures.fidelity(plans), "control fidelity") + _table(fid)))
    quality_html, quality = _quality(ctx, list(tracks))
    sections.append(("Quality metrics vs corpus", quality_html))
    timings = [t for t in stage_timings(ctx, run_date) if t["stage"] != "report"]
    if timings:
        png = figures.stage_timings(
            [f"{t['stage']} ({t['parts']})" if t["parts"] > 1 else t["stage"] for t in timings],
            [t["duration_s"] for t in timings],
            [t["status"] for t in timings],
        )
        sections.append(("Stage timings", _img(png, "stage timings")))
    sections.append(("Listen", _piano_rolls(ctx, list(tracks), page_dir)))
    sections.append(("Example playlists", _example_playlists(ctx, run_date)))

    kpi_html = "".join(
        f"<span class=kpi><b>{html.escape(str(v))}</b>{html.escape(k)}</span>" for k, v in kpis.items()
    )
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>Nightly run {run_date}</title>"
        f"<style>{CSS}</style></head><body><h1>Nightly run {run_date}</h1>"
        f"<p class=muted>personalize, generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC</p>"
        f"{kpi_html}{body}</body></html>"
    )
    return page, {"kpis": kpis, "gate_passed": quality.get("gate_passed", {})}


def run(ctx: Context, run_date: dt.date) -> dict[str, Any]:
    """Write the date's report page; returns where it is and the headline figures."""
    t0 = time.perf_counter()
    page_dir = report_dir(ctx, run_date)
    page_dir.mkdir(parents=True, exist_ok=True)
    page, facts = build_html(ctx, run_date, page_dir)
    target = page_dir / "index.html"
    tmp = target.with_suffix(".html.partial")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)
    return {
        "stage": "report",
        "run_date": run_date.isoformat(),
        "report": str(target),
        "bytes": len(page.encode()),
        **{k.replace(" ", "_"): v for k, v in facts["kpis"].items()},
        "seconds": round(time.perf_counter() - t0, 3),
    }
