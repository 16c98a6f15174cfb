"""The demo world's ground truth: each listener's segment and true taste, the segments, the world's settings.

Written under ``<data_dir>/sim/truth/`` by ``personalize simulate``. The nightly pipeline never reads it;
evaluations (taste accuracy, playlist outcomes) do, through :func:`load_truth`.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from personalize.simulate.engagement import FAMILY_COLUMNS

LISTENERS_FILE = "listeners.parquet"
SEGMENTS_FILE = "segments.json"
WORLD_FILE = "world.json"
CATALOG_TRUTH_FILE = "catalog.parquet"

TRUTH_COLUMNS = [
    "listener_id",
    "segment_id",
    "segment_name",
    "tempo_bpm",  # preferred tempo on the world's end date (after drift)
    "tempo_bpm_start",  # preferred tempo on the first simulated day
    "drift_bpm_per_week",  # 0 for listeners whose taste does not drift
    "tempo_tolerance",  # std of log(tempo) the listener enjoys
    "key_pc",  # preferred key: tonic pitch class, C=0
    "mode",  # and mode, major | minor
    "key",  # the same as a name, e.g. "D minor"
    "top_families",  # the three GM families (or drums) the listener likes most, "strings;piano;pipe"
    "density",  # preferred notes per second
    "plays_per_day",  # mean plays on an active day
    "active_share",  # share of days the listener plays anything
    *FAMILY_COLUMNS,  # weight of each family, summing to 1
]


@dataclass
class WorldTruth:
    listeners: pd.DataFrame  # TRUTH_COLUMNS, one row per listener
    segments: list[dict[str, object]]
    world: dict[str, object]  # seed, days, start_date, end_date, overlap, counts

    @property
    def start_date(self) -> dt.date:
        return dt.date.fromisoformat(str(self.world["start_date"]))

    @property
    def end_date(self) -> dt.date:
        return dt.date.fromisoformat(str(self.world["end_date"]))

    def at(self, date: dt.date) -> pd.DataFrame:
        """Listeners' true taste on ``date``: tempo follows each listener's drift (also past the end date,
        so simulated nights after the world's history keep drifting)."""
        weeks = (date - self.start_date).days / 7.0
        out = self.listeners.copy()
        out["tempo_bpm"] = (out["tempo_bpm_start"] + out["drift_bpm_per_week"] * weeks).clip(40.0, 240.0)
        return out


def truth_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "sim" / "truth"


def _folder(path: Path) -> Path:
    path = Path(path)
    for candidate in (path, path / "truth", path / "sim" / "truth"):
        if (candidate / LISTENERS_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"no demo-world ground truth under {path} (looked for sim/truth/{LISTENERS_FILE}): "
        "run `personalize simulate` first"
    )


def load_truth(path: Path) -> WorldTruth:
    """Ground truth from a data dir, its ``sim/`` folder or the ``sim/truth/`` folder itself."""
    folder = _folder(path)
    return WorldTruth(
        listeners=pd.read_parquet(folder / LISTENERS_FILE),
        segments=json.loads((folder / SEGMENTS_FILE).read_text()),
        world=json.loads((folder / WORLD_FILE).read_text()),
    )


def load_catalog_truth(path: Path) -> pd.DataFrame:
    """Per catalog track: the style segment it was made for (-1 = none) and what was assigned vs measured."""
    return pd.read_parquet(_folder(path) / CATALOG_TRUTH_FILE)
