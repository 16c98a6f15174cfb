"""The Airflow DAG: it parses fast with the agreed shape (DagBag, in a fresh interpreter with its own
AIRFLOW_HOME), and real Airflow runs it end to end (``airflow dags test``) on a small world, on SQLite and
on PostgreSQL, publishing a playlist per listener."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nightly_world import WORLD_END, build_world_files, playlists_of, world_context
from sqlalchemy import select

from personalize.db.models import PipelineRun, TasteProfile

REPO = Path(__file__).resolve().parent.parent

DAGBAG_PROBE = r"""
import json, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
t_import = time.perf_counter() - t0
bag = DagBag(dag_folder=DAGS)
dag = bag.dags.get("nightly")
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "airflow_import_s": t_import,
       "parse_s": sum(s.duration.total_seconds() if hasattr(s.duration, "total_seconds") else float(s.duration)
                      for s in bag.dagbag_stats)}
if dag is not None:
    tasks = {t.task_id: t for t in dag.tasks}
    out.update(
        schedule=str(getattr(dag, "schedule", None) or dag.timetable.summary), catchup=dag.catchup,
        max_active_runs=dag.max_active_runs, tasks=sorted(tasks),
        retries={k: t.retries for k, t in tasks.items()},
        backoff={k: float(t.retry_exponential_backoff) for k, t in tasks.items()},
        pools={k: t.pool for k, t in tasks.items()},
        mapped=sorted(k for k, t in tasks.items() if getattr(t, "is_mapped", False)),
        outlets={k: [getattr(o, "uri", str(o)) for o in (t.outlets or [])] for k, t in tasks.items()},
        heavy_modules=sorted(m for m in __import__("sys").modules if m.startswith(("personalize", "torch", "sklearn", "pretty_midi", "music21", "fluidsynth"))),
    )
print("JSON" + json.dumps(out))
"""


def _airflow_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    return env


def test_dag_parses_fast_with_the_agreed_shape(tmp_path: Path) -> None:
    code = f"DAGS = {str(REPO / 'dags')!r}\n" + DAGBAG_PROBE
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_airflow_env(tmp_path), capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.split("JSON", 1)[1])
    assert info["errors"] == {}
    assert info["parse_s"] < 2.0, f"dags/nightly.py took {info['parse_s']:.2f} s to parse"
    assert info["heavy_modules"] == [], (
        "the DAG file imports the library (or torch, sklearn, MIDI libraries) at top level"
    )
    assert info["tasks"] == ["cluster", "generate", "plan", "profile", "publish", "render", "report"]
    assert info["schedule"] == "@daily" and info["catchup"] is False and info["max_active_runs"] == 1
    assert all(r >= 1 for r in info["retries"].values()) and all(b > 1 for b in info["backoff"].values())
    assert info["pools"]["generate"] == info["pools"]["render"] == "personalize_heavy"
    assert info["mapped"] == ["generate", "render"]
    assert info["outlets"]["publish"] == ["personalize://playlists/published"]


@pytest.fixture(scope="module")
def world_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world_files(tmp_path_factory.mktemp("dag-world"))


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_airflow_runs_the_night_end_to_end(
    engine: str, world_files: Path, tmp_path: Path, monkeypatch
) -> None:
    from conftest import PG_ADMIN_URL, REQUIRE_PG, _drop_pg_database, _fresh_pg_database, _pg_reachable

    from personalize.pipeline_cli import run_with_airflow

    name = None
    if engine == "sqlite":
        url = f"sqlite:///{tmp_path / 'personalize.db'}"
    else:
        problem = _pg_reachable()
        if problem is not None:
            if REQUIRE_PG:
                pytest.fail(f"PostgreSQL required but unreachable at {PG_ADMIN_URL}: {problem}")
            pytest.skip(f"no PostgreSQL server at {PG_ADMIN_URL}: {problem}")
        name, url = _fresh_pg_database()
    try:
        ctx = world_context(url, tmp_path / "data", world_files)
        # The tasks build their own Context from the environment: hand them the test world's settings.
        for key, value in ctx.settings.model_dump(exclude_none=True).items():
            if isinstance(value, str | int | float | Path) and not isinstance(value, bool):
                monkeypatch.setenv(f"PERSONALIZE_{key.upper()}", str(value))
        monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
        log = tmp_path / "airflow.log"
        rc = run_with_airflow(ctx, WORLD_END, log)
        assert rc == 0, log.read_text()[-4000:]
        with ctx.sessions() as s:
            runs = {
                r.stage: r.status
                for r in s.execute(select(PipelineRun).where(PipelineRun.run_date == WORLD_END)).scalars()
            }
            listeners = set(
                s.execute(
                    select(TasteProfile.listener_id).where(TasteProfile.run_date == WORLD_END)
                ).scalars()
            )
        assert set(runs.values()) == {"ok"}
        assert {"profile", "cluster", "plan", "publish", "report"} <= set(runs)
        assert any(k.startswith("generate:c") for k in runs) and any(k.startswith("render:c") for k in runs)
        assert set(playlists_of(ctx, WORLD_END)) == listeners
        assert (tmp_path / "data" / "reports" / WORLD_END.isoformat() / "index.html").is_file()
        ctx.engine.dispose()
    finally:
        if name:
            _drop_pg_database(name)
