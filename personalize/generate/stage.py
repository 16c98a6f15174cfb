"""The nightly generate stage: write the planned tracks of a date (one cluster, or all), verify each
against its controls, store the MIDI in content-addressed storage and add a ``tracks`` row per track.

A track row carries what was asked (``conditioning``), what the verifier measured (``measured``) and, in
its feature columns, the features measured from the MIDI itself by the same code that measures the
catalog (so a generated track sits in the same taste space as everything listeners played). A planned
track whose every attempt misses its controls is marked ``failed`` in ``track_plans`` with the reason;
the rest of the night goes on. Rerun-safe: generated slots are skipped, and since a track's id is its
date, cluster and slot, a rerun adds no rows; the MIDI bytes are content-addressed, so no files either.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from personalize.context import Context
from personalize.db.models import Track, TrackPlan
from personalize.music.gm import DRUMS, format_programs, parse_programs
from personalize.music.keys import key_name

log = logging.getLogger(__name__)

_GENERATORS: dict[tuple[str, str], Any] = {}


def track_id_for(run_date: dt.date, cluster_id: int, slot: int) -> str:
    return f"gen-{run_date:%Y%m%d}-c{int(cluster_id)}-{int(slot):03d}"


def generator_for(ctx: Context) -> Any:
    """The generator in ``<model_dir>/<model_name>``, loaded once per process."""
    from personalize.generate import load_generator

    key = (str(ctx.settings.model_dir), ctx.settings.model_name)
    if key not in _GENERATORS:
        model_dir = Path(ctx.settings.model_dir) / ctx.settings.model_name
        if not model_dir.exists():
            raise FileNotFoundError(
                f"no trained generator in {model_dir}: train one (`personalize train {ctx.settings.model_name}`) "
                "or set PERSONALIZE_MODEL_DIR / PERSONALIZE_MODEL_NAME to a folder holding a checkpoint"
            )
        _GENERATORS[key] = load_generator(model_dir=model_dir, name=ctx.settings.model_name)
    return _GENERATORS[key]


def model_version(gen: Any, ctx: Context) -> str:
    for attr in ("version", "model_version"):
        value = getattr(gen, attr, None)
        if value:
            return str(value)[:100]
    return ctx.settings.model_name


def _plain(value: Any) -> Any:
    """A measurement (dataclass, dict, numpy values) as plain JSON."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _flag(measured: dict[str, Any], *names: str) -> bool | None:
    for name in names:
        if name in measured and measured[name] is not None:
            return bool(measured[name])
    return None


def _quality(pm: Any, key_pc: int, mode: str) -> dict[str, float] | None:
    """The music metrics the gate and the report compare with the corpus (:mod:`personalize.music.metrics`),
    NaN-free (None when the piece has no pitched notes to measure)."""
    import math

    from personalize.music.metrics import measure
    from personalize.music.score import score_from_midi

    score = score_from_midi(pm)
    if not score.parts:
        return None
    values = measure(score, key_pc, mode)
    return {k: round(float(v), 6) for k, v in values.items() if not math.isnan(float(v))}


def _midi_bytes(pm: Any) -> bytes:
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def _fidelity_columns(plan: TrackPlan, measured: dict[str, Any], features: Any) -> dict[str, Any]:
    """Asked-vs-measured columns of ``track_plans``: the verifier's flags where it gives them, else ours."""
    asked_programs = parse_programs(plan.programs)
    got_programs = list(features.programs)
    key_ok = _flag(measured, "key_ok", "key_match")
    if key_ok is None:
        key_ok = (features.key_pc, features.mode) == (plan.key_pc, plan.mode)
    tempo_ok = _flag(measured, "tempo_ok", "tempo_match")
    if tempo_ok is None:
        tempo_ok = abs(features.tempo_bpm - plan.tempo_bpm) <= max(1.0, 0.02 * plan.tempo_bpm)
    programs_ok = _flag(measured, "programs_ok", "instruments_ok", "programs_match")
    if programs_ok is None:
        programs_ok = set(map(str, asked_programs)) == set(map(str, got_programs))
    in_range = measured.get("in_range_share", measured.get("in_range"))
    return {
        "measured_tempo_bpm": float(features.tempo_bpm),
        "measured_key_pc": int(features.key_pc),
        "measured_mode": features.mode,
        "measured_programs": format_programs(got_programs),
        "measured_density": float(features.density),
        "in_range_share": float(in_range) if isinstance(in_range, int | float) else None,
        "key_ok": key_ok,
        "tempo_ok": tempo_ok,
        "programs_ok": programs_ok,
        "density_ok": _flag(measured, "density_ok", "density_match"),
    }


def _store_piece(
    ctx: Context, plan: TrackPlan, piece: Any, version: str, run_date: dt.date
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tracks row, track_plans update) for one verified piece; the MIDI goes to storage."""
    from personalize.music.measure import measure

    pm = piece.midi
    data = _midi_bytes(pm)
    stored = ctx.storage.put_bytes("midi", data, ".mid")
    features = measure(pm)
    measured = _plain(getattr(piece, "measurement", None) or {})
    if not isinstance(measured, dict):
        measured = {"value": measured}
    track_id = track_id_for(run_date, plan.cluster_id, plan.slot)
    programs = list(features.programs) or parse_programs(plan.programs)
    n_pitched = sum(1 for p in programs if p != DRUMS)
    title = (
        f"{key_name(features.key_pc, features.mode)} at {round(features.tempo_bpm)} BPM, {n_pitched} parts"
        + (" and drums" if DRUMS in programs else "")
    )
    track = {
        "track_id": track_id,
        "title": f"Tonight's {title} (cluster {plan.cluster_id}, {run_date.isoformat()})"[:300],
        "source": "generated",
        "duration_s": float(features.duration_s),
        "tempo_bpm": float(features.tempo_bpm),
        "key_pc": int(features.key_pc),
        "mode": features.mode,
        "meter": features.meter,
        "programs": format_programs(programs),
        "density": float(features.density) if features.density > 0 else None,
        "run_date": run_date,
        "cluster_id": int(plan.cluster_id),
        "model_version": version,
        "conditioning": dict(plan.controls) | {"seed": int(plan.seed), "slot": int(plan.slot)},
        "measured": measured
        | {
            "features": features.to_dict(),
            "midi_sha256": stored.sha256,
            "quality": _quality(pm, int(plan.key_pc), str(plan.mode)),
        },
        "midi_uri": stored.uri,
    }
    plan_update = {
        "status": "generated",
        "track_id": track_id,
        "attempts": int(getattr(piece, "attempts", 1) or 1),
        "detail": None,
        **_fidelity_columns(plan, measured, features),
    }
    return track, plan_update


def run(ctx: Context, run_date: dt.date, cluster_id: int | None = None) -> dict[str, Any]:
    """Generate the date's planned-but-not-generated tracks (of one cluster, or of every cluster)."""
    from personalize.generate import Controls, generate_verified

    t0 = time.perf_counter()
    q = select(TrackPlan).where(TrackPlan.run_date == run_date, TrackPlan.status == "planned")
    if cluster_id is not None:
        q = q.where(TrackPlan.cluster_id == int(cluster_id))
    with ctx.sessions() as session:
        plans = session.execute(q.order_by(TrackPlan.cluster_id, TrackPlan.slot)).scalars().all()
    summary: dict[str, Any] = {
        "stage": "generate",
        "run_date": run_date.isoformat(),
        "cluster_id": cluster_id,
        "planned": len(plans),
        "generated": 0,
        "failed": 0,
        "attempts": 0,
    }
    if not plans:
        return summary | {"seconds": round(time.perf_counter() - t0, 3)}
    gen = generator_for(ctx)
    version = model_version(gen, ctx)
    batch = max(1, ctx.settings.generate_batch)
    failures: list[str] = []
    for start in range(0, len(plans), batch):
        group = plans[start : start + batch]
        controls = [Controls(**{**p.controls, "programs": list(p.controls["programs"])}) for p in group]
        pieces = generate_verified(
            gen, controls, seed=int(group[0].seed), max_attempts=ctx.settings.generate_max_attempts
        )
        tracks: list[dict[str, Any]] = []
        updates: list[tuple[int, dict[str, Any]]] = []
        for plan, piece in zip(group, pieces, strict=True):
            attempts = int(getattr(piece, "attempts", 1) or 1)
            summary["attempts"] += attempts
            if not getattr(piece, "ok", True) or getattr(piece, "midi", None) is None:
                detail = getattr(piece, "error", None) or (
                    f"controls {Controls(**plan.controls).describe()} missed after {attempts} attempts"
                )
                detail = f"track {track_id_for(run_date, plan.cluster_id, plan.slot)}: {detail}"
                updates.append(
                    (plan.id, {"status": "failed", "attempts": attempts, "detail": str(detail)[:4000]})
                )
                failures.append(detail)
                summary["failed"] += 1
                continue
            try:
                track, plan_update = _store_piece(ctx, plan, piece, version, run_date)
            except ValueError as exc:  # e.g. a piece with no pitched notes cannot be measured
                detail = (
                    f"{Controls(**plan.controls).describe()}: generated piece could not be measured: {exc}"
                )
                updates.append((plan.id, {"status": "failed", "attempts": attempts, "detail": detail}))
                failures.append(detail)
                summary["failed"] += 1
                continue
            tracks.append(track)
            updates.append((plan.id, plan_update))
            summary["generated"] += 1
        with ctx.engine.begin() as conn:
            existing = set(
                conn.execute(
                    select(Track.track_id).where(Track.track_id.in_([t["track_id"] for t in tracks]))
                ).scalars()
            )
            new_tracks = [t for t in tracks if t["track_id"] not in existing]
            if new_tracks:
                conn.execute(insert(Track), new_tracks)
            for plan_id, values in updates:
                conn.execute(update(TrackPlan).where(TrackPlan.id == plan_id).values(**values))
        log.info(
            "cluster %s: %d/%d tracks generated",
            cluster_id,
            summary["generated"] + summary["failed"],
            len(plans),
        )
    for detail in failures:
        log.warning("generation failed: %s", detail)
    summary["failures"] = failures[:10]
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary
