"""Scale-out: the nightly DAG on Airflow's CeleryExecutor (Redis broker, PostgreSQL metadata DB, two Celery
worker processes) shares the mapped generate/render tasks between both workers, keeps every artifact in
an S3-compatible object store through fsspec, and publishes exactly the playlists a LocalExecutor
deployment publishes for the same date."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest
from airflow_cluster import AirflowDeployment, object_store, product_env
from nightly_world import WORLD_END, build_world_files, playlists_of, world_context
from sqlalchemy import select

from personalize.db.models import Track

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _redis_reachable() -> bool:
    import redis

    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2).ping())
    except Exception:
        return False


@pytest.fixture(scope="module")
def world_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world_files(tmp_path_factory.mktemp("scaleout-world"))


def test_celery_workers_share_the_night_and_publish_what_local_executor_publishes(
    world_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_available: bool
) -> None:
    from conftest import REQUIRE_PG, _drop_pg_database, _fresh_pg_database

    if not pg_available:
        pytest.skip("no PostgreSQL server for the Airflow metadata database")
    if not _redis_reachable():
        if REQUIRE_PG:
            pytest.fail("Redis required on 127.0.0.1:6379 for the Celery broker but unreachable")
        pytest.skip("no Redis on 127.0.0.1:6379 for the Celery broker")

    databases: list[str] = []

    def fresh() -> str:
        name, url = _fresh_pg_database()
        databases.append(name)
        return url

    bucket = f"personalize-{uuid.uuid4().hex[:8]}"
    deployments: list[AirflowDeployment] = []
    with object_store(tmp_path) as store_env:
        for key, value in store_env.items():
            monkeypatch.setenv(key, value)
        import s3fs

        s3fs.S3FileSystem().mkdir(bucket)
        try:
            results = {}
            for executor in ("CeleryExecutor", "LocalExecutor"):
                tag = "celery" if executor == "CeleryExecutor" else "local"
                ctx = world_context(
                    fresh(), tmp_path / tag / "data", world_files, storage_url=f"s3://{bucket}/{tag}"
                )
                deployment = AirflowDeployment(
                    workdir=tmp_path / tag,
                    metadata_url=fresh(),
                    product_env=product_env(ctx, **store_env),
                    executor=executor,
                    workers=2,
                    redis_db=random.randint(1, 15),
                )
                deployments.append(deployment)
                deployment.start()
                state = deployment.run_date(WORLD_END)
                assert state == "success", deployment.log_tail()
                results[tag] = (ctx, deployment.task_hosts())
                deployment.stop()

            celery_ctx, hosts = results["celery"]
            mapped = {
                task: [(m, h, st) for t, m, h, st in hosts if t == task] for task in ("generate", "render")
            }
            for task, runs in mapped.items():
                assert len(runs) >= 2, f"{task} was mapped over {len(runs)} clusters; the test needs >= 2"
                assert all(st == "success" for _, _, st in runs), runs
            # Both workers took a share of the mapped work. Which worker takes which task is the broker's
            # choice, so the share is asserted over generate and render together, not per task.
            used = {h for runs in mapped.values() for _, h, _ in runs}
            assert used == {"worker-1", "worker-2"}, f"mapped tasks ran on {sorted(used)} only: {mapped}"

            with celery_ctx.sessions() as s:
                audio = (
                    s.execute(
                        select(Track.audio_uri).where(
                            Track.run_date == WORLD_END, Track.audio_uri.is_not(None)
                        )
                    )
                    .scalars()
                    .all()
                )
            assert audio and all(uri.startswith(f"s3://{bucket}/celery/") for uri in audio)
            assert all(celery_ctx.storage.exists(uri) for uri in audio)

            celery_playlists = playlists_of(celery_ctx, WORLD_END)
            local_playlists = playlists_of(results["local"][0], WORLD_END)
            assert celery_playlists, "the Celery run published no playlists"
            assert celery_playlists == local_playlists
        finally:
            for deployment in deployments:
                deployment.stop()
            for name in databases:
                _drop_pg_database(name)
