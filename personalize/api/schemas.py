"""Request and response bodies of the API (they are also what /docs and the OpenAPI spec show)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

CURSOR_PATTERN = r"^[0-9]{1,9}$"
PAGE_MAX = 200


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `unknown_listener`")
    message: str = Field(description="What was wrong and what to do")


class ErrorOut(BaseModel):
    error: ErrorDetail


class HealthOut(BaseModel):
    status: str
    database: str


class PlaylistItemOut(BaseModel):
    position: int = Field(description="1-based place in the playlist")
    track_id: str
    title: str
    score: float = Field(description="How close the track's measured features are to the listener's taste")
    reason: str = Field(description="Why this track was picked, in words")
    duration_s: float
    tempo_bpm: float
    key: str = Field(description='e.g. "D minor"')
    meter: str
    instruments: list[str] = Field(description="General MIDI families, e.g. piano, strings, drums")
    audio_url: str | None = Field(description="Signed, expiring URL of the audio; null when not rendered")


class PlaylistOut(BaseModel):
    listener_id: str
    run_date: dt.date
    published_at: dt.datetime | None
    total_items: int
    items: list[PlaylistItemOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")
    audio_urls_expire_at: dt.datetime


class PlaylistQuery(BaseModel):
    """Query parameters of the playlist endpoint, validated together in one pass (it is the hottest path)."""

    date: dt.date | None = Field(default=None, description="Run date (YYYY-MM-DD); default: newest")
    limit: int = Field(default=50, ge=1, le=PAGE_MAX, description="Items per page")
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="next_cursor of the page before"
    )


class PlaylistSummaryOut(BaseModel):
    run_date: dt.date
    published_at: dt.datetime | None
    n_items: int


class PlaylistHistoryOut(BaseModel):
    listener_id: str
    playlists: list[PlaylistSummaryOut]
    next_cursor: str | None


class AudioInfoOut(BaseModel):
    media_type: str
    n_bytes: int | None
    sha256: str | None
    loudness_lufs: float | None
    true_peak_dbtp: float | None


class PlaylistContextOut(BaseModel):
    listener_id: str
    run_date: dt.date
    position: int
    score: float
    reason: str
    audio_url: str | None


class TrackOut(BaseModel):
    track_id: str
    title: str
    source: str = Field(description="catalog | generated")
    duration_s: float
    tempo_bpm: float
    key_pc: int
    mode: str
    key: str
    meter: str
    programs: str = Field(description='GM programs as stored, e.g. "0;33;drums"')
    instruments: list[str]
    density: float | None = Field(description="Notes per second, all parts")
    run_date: dt.date | None
    cluster_id: int | None
    model_version: str | None
    controls: dict[str, Any] | None = Field(description="What the generator was asked for")
    measured: dict[str, Any] | None = Field(description="What the verifier measured in the result")
    audio: AudioInfoOut | None
    playlist_context: PlaylistContextOut | None = Field(
        description="With ?listener_id=: the listener's latest published playlist entry for this track"
    )


class EventsIn(BaseModel):
    events: list[dict[str, Any]] = Field(
        description=(
            "Listening events, each with event_id, listener_id, track_id, ts (ISO 8601, UTC), ms_played and "
            "kind (play, skip, like, dislike, complete, save). Checked exactly like file ingestion. "
            "At most PERSONALIZE_EVENTS_BATCH_MAX (default 5000) per request."
        ),
    )


class QuarantinedEventOut(BaseModel):
    index: int = Field(description="0-based position of the event in the posted batch")
    event_id: str | None
    reason: str
    detail: str


class EventsOut(BaseModel):
    received: int
    accepted: int = Field(description="New events stored now")
    duplicates: int = Field(description="Events whose event_id was already stored (posting again is safe)")
    quarantined: int
    quarantined_events: list[QuarantinedEventOut]


class PlayerLinkOut(BaseModel):
    url: str = Field(description="Path of the web player for this listener, signed and short-lived")
    expires_at: dt.datetime
