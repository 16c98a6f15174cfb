"""The Airflow DAG parses fast with the agreed shape (DagBag, in a fresh interpreter with its own
AIRFLOW_HOME). Real Airflow runs it end to end on both engines in ``test_pipeline_nightly.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    env.pop("PERSONALIZE_DAG_RETRIES", None)
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
    # One task per stage of the pipeline's table, no more, no less.
    from personalize.pipeline import STAGES

    assert info["tasks"] == sorted(STAGES)
    assert info["schedule"] == "@daily" and info["catchup"] is False and info["max_active_runs"] == 1
    assert set(info["retries"].values()) == {3} and all(b > 1 for b in info["backoff"].values())
    assert info["pools"]["generate"] == info["pools"]["render"] == "personalize_heavy"
    assert info["mapped"] == ["generate", "render"]
    assert info["outlets"]["publish"] == ["personalize://playlists/published"]


def test_watched_runs_do_not_retry(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`personalize run --airflow` passes PERSONALIZE_DAG_RETRIES=0: a failing task fails the run at once
    instead of after minutes of backoff."""
    from personalize.cli.run import airflow_env
    from personalize.context import make_context

    monkeypatch.delenv("PERSONALIZE_DAG_RETRIES", raising=False)
    run_env = airflow_env(make_context(data_dir=tmp_path / "data"))
    assert run_env["PERSONALIZE_DAG_RETRIES"] == "0"
    run_env["AIRFLOW_HOME"] = str(tmp_path / "airflow")
    code = f"DAGS = {str(REPO / 'dags')!r}\n" + DAGBAG_PROBE
    proc = subprocess.run(
        [sys.executable, "-c", code], env=run_env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(json.loads(proc.stdout.split("JSON", 1)[1])["retries"].values()) == {0}
