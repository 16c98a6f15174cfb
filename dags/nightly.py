"""The nightly personalization run: files waiting in the inbox ingested, taste profiles, clusters, a plan
of fresh tracks per cluster, generation and rendering mapped over clusters, per-listener playlists
published as one asset, the run report, and retention (gc: files no recent playlist lists).

Thin on purpose: every task calls one ``personalize.pipeline.run_stage`` with the run's logical date, the
same function ``personalize run --date`` calls. Imports of the library happen inside the tasks so the
scheduler parses this file in milliseconds. XCom carries cluster ids and small count summaries only.

Backfill a range of dates (runs them one at a time, ``max_active_runs=1``)::

    airflow backfill create --dag-id nightly --from-date 2026-03-01 --to-date 2026-03-07
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import Asset, dag, task

PLAYLISTS = Asset("personalize://playlists/published", extra={"table": "playlists", "status": "published"})
HEAVY_POOL = "personalize_heavy"  # generate and render: CPU-bound, shared with whatever else runs nightly

DEFAULT_ARGS = {
    "owner": "personalize",
    # A scheduled night retries a failed task (a database restart, a full disk cleared in the meantime);
    # a one-off run from `personalize run --airflow` sets 0 so a failure shows at once instead of after
    # the whole backoff.
    "retries": int(os.environ.get("PERSONALIZE_DAG_RETRIES", "3")),
    # The first retry waits this long (then doubling); a test of recovery shortens it.
    "retry_delay": dt.timedelta(seconds=int(os.environ.get("PERSONALIZE_DAG_RETRY_DELAY_S", "120"))),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": dt.timedelta(minutes=30),
    "execution_timeout": dt.timedelta(hours=2),
}


def _context():  # type: ignore[no-untyped-def]
    from personalize.context import make_context

    # A task process of a real executor cannot start the `airflow` program again in a child, so its render
    # workers fork unless PERSONALIZE_RENDER_START_METHOD says otherwise (`personalize run --airflow` sets
    # forkserver: under `airflow dags test` the task shares its process with the run loop's threads, where
    # a forked worker can hang on a lock it inherited).
    return make_context(render_start_method=os.environ.get("PERSONALIZE_RENDER_START_METHOD", "fork"))


def _small(summary: dict) -> dict:
    """Only the scalar counts of a stage summary travel through XCom."""
    return {k: v for k, v in summary.items() if isinstance(v, int | float | str | bool) or v is None}


def _stage(stage: str, ds: str, cluster_id: int | None = None) -> dict:
    from personalize.workers import one_thread_per_process

    one_thread_per_process()  # before torch loads: one numerical thread per task, no spinning OpenMP threads
    from personalize import pipeline

    ctx = _context()
    try:
        return pipeline.run_stage(ctx, stage, ds, cluster_id=cluster_id)
    finally:
        ctx.engine.dispose()


@dag(
    dag_id="nightly",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["personalize"],
    doc_md=__doc__,
)
def nightly():  # type: ignore[no-untyped-def]
    @task
    def ingest(ds: str | None = None) -> dict:
        return _small(_stage("ingest", ds))

    @task
    def profile(ds: str | None = None) -> dict:
        return _small(_stage("profile", ds))

    @task
    def cluster(ds: str | None = None) -> dict:
        return _small(_stage("cluster", ds))

    @task
    def plan(ds: str | None = None) -> list[int]:
        return [int(c) for c in _stage("plan", ds)["clusters"]]

    @task(pool=HEAVY_POOL)
    def generate(cluster_id: int, ds: str | None = None) -> int:
        _stage("generate", ds, cluster_id)
        return int(cluster_id)

    @task(pool=HEAVY_POOL)
    def render(cluster_id: int, ds: str | None = None) -> int:
        _stage("render", ds, cluster_id)
        return int(cluster_id)

    @task(outlets=[PLAYLISTS])
    def publish(rendered: list[int], ds: str | None = None) -> dict:
        return _small(_stage("publish", ds)) | {"clusters_rendered": len(list(rendered))}

    @task
    def report(ds: str | None = None) -> dict:
        return _small(_stage("report", ds))

    @task
    def gc(ds: str | None = None) -> dict:
        return _small(_stage("gc", ds))

    clusters = plan()
    ingest() >> profile() >> cluster() >> clusters
    rendered = render.expand(cluster_id=generate.expand(cluster_id=clusters))
    published = publish(rendered)
    published >> report()
    published >> gc()


nightly()
