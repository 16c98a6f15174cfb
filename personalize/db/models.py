"""Typed SQLAlchemy 2 models. The schema itself is created by Alembic migrations (``personalize db upgrade``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

EVENT_KINDS = ("play", "skip", "like", "dislike", "complete", "save")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012


class Listener(Base):
    __tablename__ = "listeners"

    listener_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Track(Base):
    """Catalog and generated tracks alike; generated ones also carry run/cluster/model and audio columns."""

    __tablename__ = "tracks"

    track_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    artist: Mapped[str | None] = mapped_column(String(300))  # catalog tracks from a label or an export
    source: Mapped[str] = mapped_column(String(16), default="catalog")  # catalog | generated
    duration_s: Mapped[float] = mapped_column(Float)
    tempo_bpm: Mapped[float] = mapped_column(Float)
    key_pc: Mapped[int] = mapped_column(Integer)  # tonic pitch class, C=0 .. B=11
    mode: Mapped[str] = mapped_column(String(5))  # major | minor
    meter: Mapped[str] = mapped_column(String(8))  # e.g. "3/4"
    programs: Mapped[str] = mapped_column(String(200))  # GM programs "0;33;drums"
    density: Mapped[float | None] = mapped_column(Float)  # notes per second, all parts
    # Generated tracks only
    run_date: Mapped[dt.date | None] = mapped_column(Date, index=True)
    cluster_id: Mapped[int | None] = mapped_column(Integer)
    model_version: Mapped[str | None] = mapped_column(String(100))
    conditioning: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the controls asked for
    measured: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # what the verifier measured
    midi_uri: Mapped[str | None] = mapped_column(String(500))
    audio_uri: Mapped[str | None] = mapped_column(String(500))
    audio_sha256: Mapped[str | None] = mapped_column(String(64))
    audio_bytes: Mapped[int | None] = mapped_column(BigInteger)
    audio_codec: Mapped[str | None] = mapped_column(String(16))
    loudness_lufs: Mapped[float | None] = mapped_column(Float)
    true_peak_dbtp: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


_BYTEWISE_ID = String(64).with_variant(String(64, collation="C"), "postgresql")


class ListeningEvent(Base):
    __tablename__ = "listening_events"
    __table_args__ = (Index("ix_listening_events_listener_ts", "listener_id", "ts"),)

    # Bytewise on PostgreSQL (migration 0007): opaque keys, indexed faster without the locale's rules.
    event_id: Mapped[str] = mapped_column(_BYTEWISE_ID, primary_key=True)
    listener_id: Mapped[str] = mapped_column(_BYTEWISE_ID, ForeignKey("listeners.listener_id"))
    track_id: Mapped[str] = mapped_column(ForeignKey("tracks.track_id"))
    ts: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)  # UTC
    ms_played: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(10))  # one of EVENT_KINDS
    source: Mapped[str | None] = mapped_column(String(300))  # file name or "api"


class TrackExternalId(Base):
    """Another service's id of a catalog track (migration 0010), so plays exported from it find the track."""

    __tablename__ = "track_external_ids"

    scheme: Mapped[str] = mapped_column(String(16), primary_key=True)  # spotify | isrc | mbid
    value: Mapped[str] = mapped_column(String(200), primary_key=True)  # track id, ISRC or MBID, normalized
    track_id: Mapped[str] = mapped_column(ForeignKey("tracks.track_id"), index=True)


class IngestWatermark(Base):
    """How far a database source has been pulled (migration 0010): the largest watermark value stored."""

    __tablename__ = "ingest_watermarks"

    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    watermark: Mapped[str | None] = mapped_column(Text)
    rows_read: Mapped[int] = mapped_column(BigInteger, default=0)  # numbers the quarantined rows
    pulled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class QuarantinedRow(Base):
    """A row that could not be accepted, kept with where it came from and why, never dropped."""

    __tablename__ = "quarantined_rows"
    __table_args__ = (UniqueConstraint("source", "row_number", name="uq_quarantined_source_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(300))  # file path, "api", ...
    row_number: Mapped[int] = mapped_column(BigInteger)  # 1-based data row (header not counted)
    raw: Mapped[str] = mapped_column(Text)  # the row as read, JSON
    reason: Mapped[str] = mapped_column(String(40), index=True)  # short code, e.g. unknown_track
    detail: Mapped[str] = mapped_column(Text)  # what was wrong and what to do
    run_date: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PipelineRun(Base):
    """One row per stage and run date: status, counts and timing (rewritten on rerun)."""

    __tablename__ = "pipeline_runs"
    __table_args__ = (UniqueConstraint("run_date", "stage", name="uq_pipeline_runs_date_stage"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_date: Mapped[dt.date] = mapped_column(Date)
    stage: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))  # running | ok | failed
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float | None] = mapped_column(Float)
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    detail: Mapped[str | None] = mapped_column(Text)
    # While running: the claiming process as host:pid:start-ticks, and its last heartbeat (migration 0008)
    holder: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


# --- Taste profiles and clusters (migration 0002) ---------------------------------------------------


class TasteProfile(Base):
    """One listener's taste on one run date: readable columns plus the raw taste vector.

    ``vector`` is in the units of ``personalize.profile.vector.FEATURE_NAMES`` (not standardized); the
    run date's scaler lives in ``taste_runs``. ``status``: profiled (enough events, used to fit clusters),
    thin (some evidence, assigned to the nearest cluster), cold (no usable evidence: vector NULL, assigned
    to the default cluster).
    """

    __tablename__ = "taste_profiles"
    __table_args__ = (UniqueConstraint("listener_id", "run_date", name="uq_taste_profiles_listener_date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    listener_id: Mapped[str] = mapped_column(ForeignKey("listeners.listener_id"))
    run_date: Mapped[dt.date] = mapped_column(Date, index=True)
    status: Mapped[str] = mapped_column(String(16))  # profiled | thin | cold
    n_events: Mapped[int] = mapped_column(Integer)  # events in the window, all kinds
    weight_total: Mapped[float] = mapped_column(Float)  # engagement x recency weight behind the profile
    tempo_bpm: Mapped[float | None] = mapped_column(Float)  # geometric mean
    tempo_spread: Mapped[float | None] = mapped_column(Float)  # std of log2(BPM), octaves
    key_pc: Mapped[int | None] = mapped_column(Integer)  # preferred key: weighted argmax over 24 keys
    mode: Mapped[str | None] = mapped_column(String(5))
    key_name: Mapped[str | None] = mapped_column(String(12))
    major_share: Mapped[float | None] = mapped_column(Float)
    top_families: Mapped[str | None] = mapped_column(String(200))  # "strings;piano;bass", largest first
    density: Mapped[float | None] = mapped_column(Float)  # notes per second, geometric mean
    density_spread: Mapped[float | None] = mapped_column(Float)  # std of log2(notes/s)
    vector: Mapped[list[Any] | None] = mapped_column(JSON)
    key_weights: Mapped[list[Any] | None] = mapped_column(JSON)  # 24 shares: index pc (major), 12+pc (minor)
    program_weights: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # GM program -> share (top 12)
    meter_weights: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # "3/4" -> share
    cluster_id: Mapped[int | None] = mapped_column(Integer)  # set by the cluster stage


class Cluster(Base):
    """A taste cluster on one run date; ``cluster_id`` is stable from night to night."""

    __tablename__ = "clusters"
    __table_args__ = (UniqueConstraint("run_date", "cluster_id", name="uq_clusters_date_cluster"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_date: Mapped[dt.date] = mapped_column(Date, index=True)
    cluster_id: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)  # all listeners assigned (profiled + thin + cold)
    n_profiled: Mapped[int] = mapped_column(Integer)  # members that fitted the clusters
    tempo_bpm: Mapped[float] = mapped_column(Float)
    key_pc: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(5))
    key_name: Mapped[str] = mapped_column(String(12))
    top_families: Mapped[str] = mapped_column(String(200))
    density: Mapped[float] = mapped_column(Float)  # notes per second
    silhouette: Mapped[float | None] = mapped_column(Float)  # mean over a sample of members
    is_new: Mapped[bool] = mapped_column(Boolean)  # no match among the previous date's clusters
    match_distance: Mapped[float | None] = mapped_column(Float)  # to the matched previous centroid
    centroid: Mapped[list[Any]] = mapped_column(JSON)  # raw taste-vector units (FEATURE_NAMES)
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # spread, previous date, ...


class TasteRun(Base):
    """One row per run date of the cluster stage: the scaler of the taste space and how k was chosen."""

    __tablename__ = "taste_runs"

    run_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    feature_names: Mapped[list[Any]] = mapped_column(JSON)
    scaler_mean: Mapped[list[Any]] = mapped_column(JSON)  # per feature, raw units
    scaler_scale: Mapped[list[Any]] = mapped_column(JSON)  # per feature std, raw units
    feature_weights: Mapped[list[Any]] = mapped_column(JSON)  # applied after standardizing
    k: Mapped[int] = mapped_column(Integer)
    k_criterion: Mapped[str] = mapped_column(String(40))
    k_scores: Mapped[dict[str, Any]] = mapped_column(JSON)  # k -> criterion value
    n_listeners: Mapped[int] = mapped_column(Integer)
    n_profiled: Mapped[int] = mapped_column(Integer)
    n_thin: Mapped[int] = mapped_column(Integer)
    n_cold: Mapped[int] = mapped_column(Integer)
    previous_date: Mapped[dt.date | None] = mapped_column(Date)
    n_new_clusters: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# --- Playlists and API keys (migration 0003) -------------------------------------------------------


class Playlist(Base):
    """A listener's playlist for one run date; the app sees only ``published`` ones."""

    __tablename__ = "playlists"
    __table_args__ = (UniqueConstraint("listener_id", "run_date", name="uq_playlists_listener_date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    listener_id: Mapped[str] = mapped_column(ForeignKey("listeners.listener_id"))
    run_date: Mapped[dt.date] = mapped_column(Date, index=True)
    status: Mapped[str] = mapped_column(String(12))  # building | published
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class PlaylistItem(Base):
    __tablename__ = "playlist_items"

    playlist_id: Mapped[int] = mapped_column(ForeignKey("playlists.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1-based
    track_id: Mapped[str] = mapped_column(ForeignKey("tracks.track_id"))
    score: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(300))


class ApiKey(Base):
    """An app-backend key, stored only as a hash; revoked keys are kept for audit."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)  # shown to humans to tell keys apart
    key_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


# --- The nightly run (migration 0006) --------------------------------------------------------------


class TrackPlan(Base):
    """One planned track of a night: the controls drawn for a cluster, and what the generated track measured.

    ``status``: planned (not generated yet) | generated (``track_id`` set) | failed (every attempt missed
    its controls; ``detail`` says which). The ``*_ok`` flags say whether the verifier found the asked key,
    tempo, instrument set and density bin in the track.
    """

    __tablename__ = "track_plans"
    __table_args__ = (
        UniqueConstraint("run_date", "cluster_id", "slot", name="uq_track_plans_date_cluster_slot"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_date: Mapped[dt.date] = mapped_column(Date, index=True)
    cluster_id: Mapped[int] = mapped_column(Integer)
    slot: Mapped[int] = mapped_column(Integer)  # 0-based within the cluster and date
    seed: Mapped[int] = mapped_column(BigInteger)  # derived from run date, cluster and slot
    controls: Mapped[dict[str, Any]] = mapped_column(JSON)  # personalize.generate.Controls as a dict
    tempo_bpm: Mapped[float] = mapped_column(Float)  # asked
    key_pc: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(5))
    meter: Mapped[str] = mapped_column(String(8))
    programs: Mapped[str] = mapped_column(String(200))  # "0;33;drums"
    density: Mapped[float | None] = mapped_column(Float)  # asked notes per second
    status: Mapped[str] = mapped_column(String(12))
    track_id: Mapped[str | None] = mapped_column(ForeignKey("tracks.track_id"))
    attempts: Mapped[int | None] = mapped_column(Integer)
    measured_tempo_bpm: Mapped[float | None] = mapped_column(Float)
    measured_key_pc: Mapped[int | None] = mapped_column(Integer)
    measured_mode: Mapped[str | None] = mapped_column(String(5))
    measured_programs: Mapped[str | None] = mapped_column(String(200))
    measured_density: Mapped[float | None] = mapped_column(Float)
    in_range_share: Mapped[float | None] = mapped_column(Float)  # notes inside their instrument's range
    key_ok: Mapped[bool | None] = mapped_column(Boolean)
    tempo_ok: Mapped[bool | None] = mapped_column(Boolean)
    programs_ok: Mapped[bool | None] = mapped_column(Boolean)
    density_ok: Mapped[bool | None] = mapped_column(Boolean)
    detail: Mapped[str | None] = mapped_column(Text)
    # Set for a track written for one listener's own taste (migration 0009); None for a cluster's track.
    listener_id: Mapped[str | None] = mapped_column(String(64))


# --- The simulated world's closed loop (migration 0009) ---------------------------------------------


class LoopNight(Base):
    """One night of ``personalize loop``: the simulated world answered the day, the night ran, and what
    was measured (``metrics``). ``status``: running | done; a loop continues after its last done night."""

    __tablename__ = "loop_nights"

    run_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    world_tag: Mapped[str] = mapped_column(String(40))
    night: Mapped[int] = mapped_column(Integer)  # 0 = the world's last day of history
    status: Mapped[str] = mapped_column(String(12))
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
