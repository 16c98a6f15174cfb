"""Settings read from the environment (prefix ``PERSONALIZE_``), with defaults that run on one laptop."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent

# Soundfonts in order of preference: FluidR3_GM (MIT, Debian fluid-soundfont-gm), then pretty_midi's TimGM6mb (GPL-2).
SOUNDFONT_CANDIDATES = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    Path("/usr/share/soundfonts/FluidR3_GM.sf2"),
)


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
    ingest_chunk_rows: int = 200_000
    # SQLite: a source this big (and at least as big as listening_events already is) goes in as one
    # transaction with the table's secondary indexes built again at the end (see ingest/store.py).
    ingest_bulk_min_rows: int = 1_000_000
    ms_played_slack_s: float = 30.0
    midi_max_bytes: int = 8_000_000  # bigger MIDI files are quarantined (midi_too_large), not parsed
    midi_parse_timeout_s: float = (
        30.0  # a file taking longer to parse and measure is quarantined (midi_timeout)
    )

    # Taste profiles: events in the window ending with the run date, weighted by engagement and recency
    profile_window_days: int = 28
    profile_half_life_days: float = 14.0
    profile_min_events: int = 5  # fewer events in the window: "thin" (kept out of cluster fitting)
    profile_early_skip_s: float = 30.0  # a play or skip shorter than this is an early skip
    profile_skip_penalty: float = 0.5  # weight taken off a track for each early skip
    profile_like_weight: float = 2.0
    profile_save_weight: float = 1.5
    profile_dislike_weight: float = 2.0  # taken off the track's weight

    # Taste clusters
    cluster_k_min: int = 2
    cluster_k_max: int = 12
    cluster_fit_sample: int = 20_000  # listeners used to choose k
    cluster_silhouette_sample: int = 2_500
    cluster_match_ratio: float = 0.5  # a match to yesterday's cluster must be closer than this x the
    # smallest distance between two of today's centroids, else the cluster gets a new id
    cluster_seed: int = 0

    # Planning and playlists
    tracks_per_cluster_min: int = 4
    tracks_per_cluster_max: int = 40
    tracks_total: int = 200
    playlist_size: int = 5
    # Length of a generated song, drawn per track between these (seconds of music at the asked tempo).
    track_seconds_min: float = 120.0
    track_seconds_max: float = 180.0
    generate_max_attempts: int = 8  # tries per planned track before it is marked failed with the reason
    generate_batch: int = (
        64  # control sets generated together (a step of a batch costs about one of a single piece)
    )
    playlist_diversity: float = 0.3  # MMR trade-off: 0 = closest tracks only, 1 = most varied
    playlist_history_days: int = 365  # tracks received within this many days are never offered again
    stage_lock_timeout_s: float = 3 * 3600.0  # a stage claim left "running" this long is taken over
    publish_crash_after: int | None = Field(
        default=None, description="Fault injection for tests: publishing raises after this many listeners"
    )

    # Audio
    sample_rate_hz: int = 44_100
    target_lufs: float = -14.0
    true_peak_max_dbtp: float = -1.0
    render_timeout_s: float = 60.0
    render_max_duration_s: float = 600.0  # longer MIDI is cut here (a generated track is ~1 min)
    render_min_lufs: float = -70.0  # quieter renders (BS.1770 absolute gate) are rejected as silent
    render_fade_out_s: float = 0.5
    render_codec: str = "ogg"  # ogg (Vorbis, 44.1 kHz) | opus (48 kHz)
    render_workers: int | None = None  # processes for batch rendering; default one per core
    # How render worker processes start. forkserver is the safe default; "fork" is for hosts whose main
    # program cannot be imported again in a child (an Airflow task process: `airflow` needs its metadata
    # DB, which Airflow 3 hides from tasks). The nightly DAG sets it.
    render_start_method: Literal["forkserver", "spawn", "fork"] = "forkserver"

    # App backend API
    signing_secret: str | None = Field(
        default=None,
        description="HMAC key for signed audio and player URLs; default: generated once into <data_dir>/signing_secret",
    )
    audio_url_ttl_s: int = Field(default=6 * 3600, description="How long a signed audio URL stays valid")
    player_url_ttl_s: int = Field(
        default=15 * 60, description="How long a signed web-player link stays valid"
    )
    events_batch_max: int = Field(default=5000, description="Most events one POST /v1/events may carry")
    request_body_max_bytes: int = Field(
        default=8 * 1024 * 1024, description="Largest request body the API reads"
    )

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


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with keyword overrides (tests and the CLI use these)."""
    return Settings(**overrides)
