"""Settings read from the environment (prefix ``PERSONALIZE_``), with defaults that run on one laptop."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from annotated_types import Ge, Gt, Le, Lt
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent

# Soundfonts in order of preference: FluidR3_GM (MIT, Debian fluid-soundfont-gm), then pretty_midi's TimGM6mb (GPL-2).
SOUNDFONT_CANDIDATES = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    Path("/usr/share/soundfonts/FluidR3_GM.sf2"),
)


LEASE_MIN_BEATS = 3  # a stage lease outlives at least this many heartbeats


class Settings(BaseSettings):
    """Every knob of the product. Each field can be set as ``PERSONALIZE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="PERSONALIZE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="Root for the SQLite file, storage and reports.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/personalize.db"
    )
    storage_url: str | None = Field(
        default=None, description="fsspec URL for MIDI/audio/artifacts; default <data_dir>/storage"
    )
    soundfont: Path | None = Field(default=None, description="SF2 file; default FluidR3_GM, else TimGM6mb")
    model_dir: Path = Field(default=REPO_ROOT / "models", description="Folder holding trained generators")
    model_name: str = Field(default="transformer", description="Sub-folder of model_dir used to generate")

    # Ingest
    inbox_dir: Path | None = Field(
        default=None,
        description="Folder the ingest stage reads each night (events/, catalog/); default <data_dir>/inbox",
    )
    ingest_chunk_rows: int = Field(default=200_000, ge=1, le=100_000_000)
    # SQLite: a source this big (and at least as big as listening_events already is) goes in as one
    # transaction with the table's secondary indexes built again at the end (see ingest/store.py).
    ingest_bulk_min_rows: int = Field(default=1_000_000, ge=1)
    ms_played_slack_s: float = Field(default=30.0, ge=0, le=86_400)
    midi_max_bytes: int = Field(
        default=8_000_000, ge=1
    )  # bigger MIDI files are quarantined (midi_too_large), not parsed
    # a file taking longer to parse and measure is quarantined (midi_timeout)
    midi_parse_timeout_s: float = Field(default=30.0, gt=0, le=3600)

    # Taste profiles: events in the window ending with the run date, weighted by engagement and recency
    profile_window_days: int = Field(default=28, ge=1, le=3650)
    # 5 days since the availability weight below; 7 before (docs/loop.md, "Thirty nights")
    profile_half_life_days: float = Field(default=5.0, gt=0, le=3650)
    profile_min_events: int = Field(
        default=5, ge=0
    )  # fewer events in the window: "thin" (kept out of cluster fitting)
    profile_early_skip_s: float = Field(
        default=30.0, ge=0, le=3600
    )  # a play or skip shorter than this is an early skip
    profile_skip_penalty: float = Field(
        default=0.5, ge=0, le=100
    )  # weight taken off a track for each early skip
    profile_like_weight: float = Field(default=2.0, ge=0, le=100)
    profile_save_weight: float = Field(default=1.5, ge=0, le=100)
    profile_dislike_weight: float = Field(default=2.0, ge=0, le=100)  # taken off the track's weight
    # A play of a track the service wrote and served counts this much of a play the listener chose: what
    # was served says less about where a listener's taste is going (exposure bias). With a 7-day half-life,
    # 0.1 against the earlier 14 days and 0.25 on a 16-night, 2,000-listener loop's events (docs/loop.md):
    # drifting profiles showed 82 % of their change up to a week before instead of 64 %, steady listeners'
    # tempo error 2.47 % against 2.46 %
    profile_served_play_weight: float = Field(default=0.1, ge=0, le=1)
    # Availability: music a listener picks themselves comes from a catalog with more tracks at some tempi than
    # at others, so what they play leans towards the crowded tempi (a listener whose taste moves towards
    # sparse ones keeps finding the crowded ones). A chosen track counts (catalog density at its tempo /
    # the catalog's mean density) ** -profile_availability_power, the ratio clipped to 1/4..4 (a
    # propensity weight; served tracks are left as they are). 0 turns it off (docs/taste.md).
    profile_availability_power: float = Field(default=1.0, ge=0, le=4)
    profile_availability_bandwidth_log2: float = Field(default=0.06, gt=0, le=2)
    # Drift: a listener whose last profile_recent_days of listening sit apart from the whole window (their
    # recent mean tempo or density more than profile_drift_z_start standard errors from the window's) is
    # moving; their profile blends towards the recent days alone, wholly at profile_drift_z_full. Steady
    # listeners keep the whole window's evidence (docs/taste.md).
    profile_recent_days: int = Field(default=7, ge=1, le=3650)
    profile_drift_z_start: float = Field(default=2.0, ge=0, le=1000)
    profile_drift_z_full: float = Field(default=4.0, gt=0, le=1000)

    # Taste clusters
    cluster_k_min: int = Field(default=2, ge=2, le=100)
    cluster_k_max: int = Field(default=12, ge=2, le=100)
    cluster_fit_sample: int = Field(default=20_000, ge=2)  # listeners used to choose k
    cluster_silhouette_sample: int = Field(default=2_500, ge=2)
    cluster_match_ratio: float = Field(
        default=0.5, gt=0, le=10
    )  # a match to yesterday's cluster must be closer than this x the
    # smallest distance between two of today's centroids, else the cluster gets a new id
    cluster_seed: int = Field(default=0, ge=0)

    # Planning and playlists
    tracks_per_cluster_min: int = Field(default=4, ge=0, le=10_000)
    tracks_per_cluster_max: int = Field(default=40, ge=1, le=10_000)
    tracks_total: int = Field(default=200, ge=1, le=1_000_000)
    playlist_size: int = Field(default=5, ge=1, le=1000)
    # Length of a generated song, drawn per track between these (seconds of music at the asked tempo).
    track_seconds_min: float = Field(default=120.0, gt=0, le=3600)
    track_seconds_max: float = Field(default=180.0, gt=0, le=3600)
    generate_max_attempts: int = Field(
        default=8, ge=1, le=1000
    )  # tries per planned track before it is marked failed with the reason
    # control sets generated together (a step of a batch costs about one of a single piece)
    generate_batch: int = Field(default=64, ge=1, le=4096)
    playlist_diversity: float = Field(
        default=0.3, ge=0, le=1
    )  # MMR trade-off: 0 = closest tracks only, 1 = most varied
    playlist_history_days: int = Field(
        default=30, ge=0, le=36_500
    )  # freshness window: a track that was in a listener's playlist within this many days never comes back
    # Share of a playlist that is new each night (a daily mix); the rest carries over from yesterday's
    # playlist, minus what the listener skipped or disliked. 1.0: a whole new playlist every night.
    playlist_new_share: float = Field(default=0.6, gt=0, le=1)
    # Listeners far from their cluster's centroid get a track written for their own taste, as many as this
    # many CPU-seconds a night buy at the last night's measured cost per track (0: none).
    personal_tracks_cpu_s: float = Field(default=60.0, ge=0, le=86_400)
    # Only listeners farther from their centroid than this quantile of all listeners' distances qualify.
    personal_outlier_quantile: float = Field(default=0.9, ge=0, lt=1)
    # Retention: the gc stage removes MIDI and audio that no playlist of the last retention_days references.
    retention_days: int = Field(default=30, ge=2, le=36_500)
    # A stored file no track row names (a crash between writing it and recording it) is removed only
    # once it is this old, so a night still writing its files keeps them.
    gc_orphan_grace_s: float = Field(default=6 * 3600.0, ge=0, le=30 * 86_400)
    # A running stage's claim is a lease: the claiming process beats every stage_heartbeat_s; a claim held
    # on another host with no beat for stage_lease_s is taken over (one on this host as soon as its
    # process is gone).
    stage_heartbeat_s: float = Field(default=30.0, ge=1, le=600)
    stage_lease_s: float = Field(default=180.0, ge=10, le=86_400)
    publish_crash_after: int | None = Field(
        default=None,
        ge=0,
        description="Fault injection for tests: publishing raises after this many listeners",
    )

    # Audio
    sample_rate_hz: int = Field(default=44_100, ge=8_000, le=192_000)
    target_lufs: float = Field(default=-14.0, ge=-70, le=0)
    true_peak_max_dbtp: float = Field(default=-1.0, ge=-20, le=0)
    render_timeout_s: float = Field(default=60.0, gt=0, le=86_400)
    render_max_duration_s: float = Field(
        default=600.0, gt=0, le=86_400
    )  # longer MIDI is cut here (a generated track is ~1 min)
    render_min_lufs: float = Field(
        default=-70.0, ge=-120, le=0
    )  # quieter renders (BS.1770 absolute gate) are rejected as silent
    render_fade_out_s: float = Field(default=0.5, ge=0, le=60)
    render_codec: Literal["ogg", "opus"] = "ogg"  # ogg (Vorbis, 44.1 kHz) | opus (48 kHz)
    render_workers: int | None = Field(
        default=None, ge=1, le=1024
    )  # processes for batch rendering; default one per core
    # How render worker processes start. forkserver is the safe default; "fork" is for hosts whose main
    # program cannot be imported again in a child (an Airflow task process: `airflow` needs its metadata
    # DB, which Airflow 3 hides from tasks). The nightly DAG sets it.
    render_start_method: Literal["forkserver", "spawn", "fork"] = "forkserver"

    # App backend API
    signing_secret: str | None = Field(
        default=None,
        description="HMAC key for signed audio and player URLs; default: generated once into <data_dir>/signing_secret",
    )
    audio_url_ttl_s: int = Field(
        default=6 * 3600, ge=1, le=7 * 86_400, description="How long a signed audio URL stays valid"
    )
    player_url_ttl_s: int = Field(
        default=15 * 60, ge=1, le=7 * 86_400, description="How long a signed web-player link stays valid"
    )
    events_batch_max: int = Field(
        default=5000, ge=1, le=1_000_000, description="Most events one POST /v1/events may carry"
    )
    request_body_max_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        le=1024**3,
        description="Largest request body the API reads, declared or streamed (chunked)",
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Scheme, host and port the app reaches the API at; signed audio URLs start with it "
        "(never with the request's Host header). `personalize serve` uses its own --host/--port when unset.",
    )
    api_key_rate_per_s: float = Field(
        default=5000.0,
        gt=0,
        le=1_000_000,
        description="Requests per second one API key may make, shared by the host's API workers (429 beyond it)",
    )
    api_key_burst: int = Field(
        default=10_000,
        ge=1,
        le=10_000_000,
        description="Requests one API key may make at once before the rate applies",
    )
    api_db_threads: bool = Field(
        default=False,
        description=(
            "Run the API's PostgreSQL reads in worker threads, so the event loop serves other requests "
            "while a read waits (for a database across a slow network). Off: each read runs on the event "
            "loop, which costs less than the thread hop and keeps the tail latency low on a nearby database"
        ),
    )
    api_db_statement_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="The longest an API read may run on PostgreSQL before it is cancelled (503)",
    )

    @field_validator("public_base_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(
                "an absolute http:// or https:// URL with a host and no query, e.g. https://api.example.com"
            )
        return value.strip().rstrip("/")

    @model_validator(mode="after")
    def _ranges_in_order(self) -> Settings:
        for low, high in (
            ("cluster_k_min", "cluster_k_max"),
            ("tracks_per_cluster_min", "tracks_per_cluster_max"),
            ("track_seconds_min", "track_seconds_max"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(
                    f"{env_name(low)}={getattr(self, low)} is above {env_name(high)}={getattr(self, high)}: "
                    "allowed: the minimum at most the maximum"
                )
        if self.stage_lease_s < LEASE_MIN_BEATS * self.stage_heartbeat_s:
            raise ValueError(
                f"{env_name('stage_lease_s')}={_number(self.stage_lease_s)} is under {LEASE_MIN_BEATS} beats of "
                f"{env_name('stage_heartbeat_s')}={_number(self.stage_heartbeat_s)}: allowed: a lease of at "
                f"least {LEASE_MIN_BEATS} heartbeats, so one late beat does not lose a running stage"
            )
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'personalize.db').resolve()}"

    @cached_property
    def resolved_storage_url(self) -> str:
        if self.storage_url:
            return self.storage_url
        return str((self.data_dir / "storage").resolve())

    @cached_property
    def resolved_soundfont(self) -> Path:
        if self.soundfont is not None:
            if not self.soundfont.is_file():
                raise FileNotFoundError(
                    f"Soundfont {self.soundfont} does not exist: set PERSONALIZE_SOUNDFONT to an .sf2 file."
                )
            return self.soundfont
        for candidate in SOUNDFONT_CANDIDATES:
            if candidate.is_file():
                return candidate
        import pretty_midi

        fallback = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
        if fallback.is_file():
            return fallback
        raise FileNotFoundError(
            "No General MIDI soundfont found: install Debian's fluid-soundfont-gm or set PERSONALIZE_SOUNDFONT."
        )


class InvalidSettings(ValueError):
    """A setting outside its allowed range (or of the wrong type): the message is one line per product
    rule, naming the variable, the value and what is allowed."""


def env_name(field: str) -> str:
    """The environment variable of a setting: ``playlist_size`` -> ``PERSONALIZE_PLAYLIST_SIZE``."""
    return f"PERSONALIZE_{field.upper()}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def allowed_range(field: str) -> str:
    """What a numeric setting accepts, in words, from its declared bounds ("" when unbounded).

    >>> allowed_range("playlist_size"), allowed_range("profile_half_life_days")
    ('1 to 1000', 'more than 0, at most 3650')
    """
    low = high = ""
    for bound in Settings.model_fields[field].metadata:
        if isinstance(bound, Ge):
            low = f"at least {_number(bound.ge)}"
        elif isinstance(bound, Gt):
            low = f"more than {_number(bound.gt)}"
        elif isinstance(bound, Le):
            high = f"at most {_number(bound.le)}"
        elif isinstance(bound, Lt):
            high = f"less than {_number(bound.lt)}"
    if low.startswith("at least") and high.startswith("at most"):
        return f"{low.removeprefix('at least ')} to {high.removeprefix('at most ')}"
    return ", ".join(part for part in (low, high) if part)


def _explain(error: Any) -> str:
    loc = error.get("loc") or ()
    field = str(loc[0]) if loc else ""
    if field not in Settings.model_fields:  # a rule across settings (min above max) says it all itself
        return str(error.get("ctx", {}).get("error", error.get("msg", "invalid settings")))
    kind = str(error.get("type", ""))
    problem = "is out of range"
    if kind.endswith("_parsing") or kind.endswith("_type"):
        problem = "is not a number" if allowed_range(field) else "has the wrong type"
    allowed = allowed_range(field)
    if not allowed:
        reason = str(error.get("ctx", {}).get("error", error.get("msg", "invalid")))
        allowed = reason.removeprefix("Value error, ").removeprefix("Input should be ")
        problem = "is not valid"
    return f"{env_name(field)}={error.get('input')!s} {problem}; allowed: {allowed}"


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with keyword overrides (tests and the CLI use these).

    Raises :class:`InvalidSettings` with one line naming each bad variable and its allowed range."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(_explain(e) for e in exc.errors())
        raise InvalidSettings(f"{problems} (set it within range, or unset it for the default)") from None
