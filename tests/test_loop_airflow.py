"""A short stretch of the closed loop through real Airflow: `personalize loop --nights 2 --airflow` on the
small demo world runs both nights as DAG runs (gc included), the world answers the first night's playlists
through ingest, and the report page shows both nights. Running the command again adds nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from personalize.db.models import ListeningEvent, LoopNight, PipelineRun, Playlist
from tests.nightly_world import NIGHT_SETTINGS, WORLD_END, build_world_files, world_context


@pytest.fixture(scope="module")
def world_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world_files(tmp_path_factory.mktemp("world"))


def _loop(data_dir: Path, url: str, nights: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update({f"PERSONALIZE_{k.upper()}": str(v) for k, v in NIGHT_SETTINGS.items()})
    env.update(
        PERSONALIZE_DATA_DIR=str(data_dir),
        PERSONALIZE_DATABASE_URL=url,
        PERSONALIZE_PERSONAL_TRACKS_CPU_S="2",
        AIRFLOW_HOME=str(data_dir / "airflow"),
        COLUMNS="200",
    )
    personalize = str(Path(sys.executable).with_name("personalize"))
    return subprocess.run(
        [personalize, "loop", "--nights", str(nights), "--airflow"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def test_two_nights_of_the_loop_through_airflow(world_files: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'personalize.db'}"
    ctx = world_context(url, tmp_path / "data", world_files)
    proc = _loop(tmp_path / "data", url, 2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with ctx.sessions() as s:
        nights = s.execute(select(LoopNight).order_by(LoopNight.night)).scalars().all()
        assert [(n.night, n.status) for n in nights] == [(0, "done"), (1, "done")]
        gc_dates = set(
            s.execute(select(PipelineRun.run_date).where(PipelineRun.stage == "gc", PipelineRun.status == "ok"))
            .scalars()
        )  # fmt: skip
        assert len(gc_dates) == 2
        answered = s.scalar(
            select(func.count())
            .select_from(ListeningEvent)
            .where(ListeningEvent.event_id.like("%-d20261111-%"))
        )
        published = s.scalar(select(func.count()).select_from(Playlist).where(Playlist.status == "published"))
    assert answered > 0 and published > 0
    m = nights[1].metrics
    assert m["playlist_plays"] > 0 and m["like_rate"] is not None and m["stored_mb"] > 0
    assert nights[0].run_date == WORLD_END
    page = tmp_path / "data" / "reports" / "loop" / "index.html"
    assert page.is_file() and "2 nights" in page.read_text()

    again = _loop(tmp_path / "data", url, 2)
    assert again.returncode == 0 and "night  0" not in again.stdout
    with ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Playlist)) == published
    ctx.engine.dispose()
