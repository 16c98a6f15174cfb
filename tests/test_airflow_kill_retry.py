"""Recovery on a real Airflow deployment (api-server, dag-processor and scheduler with LocalExecutor, on a
PostgreSQL metadata database): the process running a heavy stage (generate, then render) is killed with
SIGKILL mid-stage, Airflow's own retry runs the task again, the retry takes the dead process's claim over
at once, and the night publishes every playlist. No operator step (`personalize run-release`) is taken."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from airflow_cluster import AirflowDeployment, product_env
from nightly_world import WORLD_END, build_world_files, playlists_of, world_context
from sqlalchemy import create_engine, text

from personalize.runs import _parse_holder as parse_holder

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

HEAVY = ("generate", "render")


class Killer(threading.Thread):
    """Watches the product's stage claims and kills (SIGKILL) the first running claim's process of each
    heavy stage, once per stage; records what it killed."""

    def __init__(self, database_url: str) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(database_url)
        self.killed: dict[str, tuple[str, int]] = {}  # stage -> (label, pid)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and len(self.killed) < len(HEAVY):
            with self.engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT stage, holder FROM pipeline_runs WHERE status = 'running' AND run_date = :d"
                    ),
                    {"d": WORLD_END},
                ).all()
            for label, holder in rows:
                stage = next((s for s in HEAVY if label.startswith(s)), None)
                parsed = parse_holder(holder)
                if stage is None or stage in self.killed or parsed is None:
                    continue
                try:
                    os.kill(parsed[1].pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                self.killed[stage] = (label, parsed[1].pid)
            time.sleep(0.1)
        self.engine.dispose()


def test_a_heavy_task_killed_mid_stage_is_retried_by_airflow_and_the_night_completes(
    tmp_path: Path, pg_available: bool
) -> None:
    from conftest import _drop_pg_database, _fresh_pg_database

    if not pg_available:
        pytest.skip("no PostgreSQL server for the Airflow metadata database")
    databases: list[str] = []

    def fresh() -> str:
        name, url = _fresh_pg_database()
        databases.append(name)
        return url

    deployment = None
    try:
        ctx = world_context(fresh(), tmp_path / "data", build_world_files(tmp_path / "world"))
        deployment = AirflowDeployment(
            workdir=tmp_path / "airflow-local",
            metadata_url=fresh(),
            product_env=product_env(ctx, PERSONALIZE_DAG_RETRY_DELAY_S="3"),
            executor="LocalExecutor",
        )
        deployment.start()
        killer = Killer(ctx.settings.resolved_database_url)
        killer.start()
        state = deployment.run_date(WORLD_END, timeout_s=1200)
        killer.stop.set()
        killer.join(timeout=10)
        assert set(killer.killed) == set(HEAVY), f"killed {killer.killed}: a stage ran too briefly to catch"
        assert state == "success", deployment.log_tail()

        tries = {
            (str(t), int(m)): int(n)
            for t, m, n in deployment._query(
                "SELECT task_id, map_index, try_number FROM task_instance "
                "WHERE dag_id='nightly' AND run_id=:r",
                r=deployment.run_id,
            )
        }
        for stage, (label, _) in killer.killed.items():
            retried = [n for (t, _), n in tries.items() if t == stage and n >= 2]
            assert retried, f"{label} was killed but no {stage} task instance was retried: {tries}"
        with ctx.engine.connect() as conn:
            stages = dict(
                conn.execute(
                    text("SELECT stage, status FROM pipeline_runs WHERE run_date = :d"), {"d": WORLD_END}
                ).all()
            )
        assert stages and set(stages.values()) == {"ok"}, stages
        for label, _ in killer.killed.values():
            assert stages[label] == "ok"
        assert playlists_of(ctx, WORLD_END), "the night published no playlists"
    finally:
        if deployment is not None:
            deployment.stop()
        for name in databases:
            _drop_pg_database(name)
