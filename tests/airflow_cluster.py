"""A real Airflow deployment on loopback for the scale-out test: PostgreSQL metadata DB, api-server,
scheduler, dag-processor and, for CeleryExecutor, Celery workers on Redis, each its own process with its
own worker name. Artifacts go to an S3-compatible object store (a local emulator) through fsspec."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str, procs: list[subprocess.Popen] | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        for p in procs or []:
            if p.poll() is not None:
                raise RuntimeError(f"{what}: process {p.args!r} exited with {p.returncode}")
        time.sleep(1.0)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@contextmanager
def object_store(workdir: Path) -> Iterator[dict[str, str]]:
    """An S3-compatible server on loopback and the environment that points boto/s3fs at it."""
    port = free_port()
    log = (workdir / "object-store.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    env = {
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "personalize",
        "AWS_SECRET_ACCESS_KEY": "personalize",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        wait_for(lambda: _port_open(port), 60, "the object store", [proc])
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def product_env(ctx, **extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The PERSONALIZE_* environment of the tasks: only what the test's Context changed from the defaults
    (so the tasks keep the product's own defaults for everything else, for instance how render workers
    start inside an executor's task process), the database and storage URLs, and ``extra``."""
    env = {}
    for key, value in ctx.settings.model_dump(exclude_none=True, exclude_defaults=True).items():
        if isinstance(value, str | int | float | Path) and not isinstance(value, bool):
            env[f"PERSONALIZE_{key.upper()}"] = str(value)
    env["PERSONALIZE_DATABASE_URL"] = ctx.settings.resolved_database_url
    env["PERSONALIZE_STORAGE_URL"] = ctx.settings.resolved_storage_url
    return env | extra


@dataclass
class AirflowDeployment:
    """Start with :meth:`start`, run a date with :meth:`run_date`, always :meth:`stop`."""

    workdir: Path
    metadata_url: str  # SQLAlchemy URL of an empty PostgreSQL database for Airflow itself
    product_env: dict[str, str]  # PERSONALIZE_* settings (and object-store credentials) for the tasks
    executor: str = "CeleryExecutor"
    workers: int = 2
    redis_db: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.api_port = free_port()
        self.env = dict(os.environ)
        self.env.update(self.product_env)
        self.env.update(
            AIRFLOW_HOME=str(self.workdir / "airflow"),
            AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__EXECUTOR=self.executor,
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__HOSTNAME_CALLABLE="personalize.workers.worker_hostname",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{self.api_port}/execution/",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=self.metadata_url,
            # psycopg 3 serves Airflow's async engine too (its default async driver, asyncpg, is not needed).
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=self.metadata_url,
            AIRFLOW__CELERY__BROKER_URL=f"redis://127.0.0.1:6379/{self.redis_db}",
            AIRFLOW__CELERY__RESULT_BACKEND=f"redis://127.0.0.1:6379/{self.redis_db}",
            AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER="1",
            # One task at a time per worker, run in the worker's own (non-daemonic) process, so the render
            # stage can start its per-core process pool; scale out by adding workers.
            AIRFLOW__CELERY__POOL="solo",
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(16),
            AIRFLOW__API__SECRET_KEY=secrets.token_hex(16),
            # Only the run the test triggers: no scheduled run for "today" on top of it.
            AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        )
        (self.workdir / "airflow").mkdir(parents=True, exist_ok=True)

    def _cli(self, *args: str, timeout_s: float = 300) -> str:
        proc = subprocess.run(
            [str(BIN / "airflow"), *args], env=self.env, capture_output=True, text=True, timeout=timeout_s
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
            )
        return proc.stdout

    def _spawn(self, name: str, args: list[str], **extra_env: str) -> None:
        log = (self.workdir / f"{name}.log").open("w")
        self.logs.append(log)
        self.procs[name] = subprocess.Popen(
            [str(BIN / "airflow"), *args],
            env=self.env | extra_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so stop() can end each component with its children
        )

    def start(self) -> None:
        self._cli("db", "migrate")
        self._cli("pools", "set", "personalize_heavy", "4", "generate and render")
        self._spawn("api-server", ["api-server", "--port", str(self.api_port)])
        self._spawn("dag-processor", ["dag-processor"])
        self._spawn("scheduler", ["scheduler"])
        for i in range(1, self.workers + 1 if self.executor == "CeleryExecutor" else 1):
            name = f"worker-{i}"
            self._spawn(
                name,
                ["celery", "worker", "--concurrency", "1", "--celery-hostname", f"{name}@%h"],
                PERSONALIZE_WORKER_NAME=name,
            )
        wait_for(lambda: _port_open(self.api_port), 180, "the Airflow api-server", list(self.procs.values()))
        # Every Celery worker consuming before the run starts: a worker still importing when the mapped
        # tasks are queued would leave them all to the other one.
        workers = (
            [n for n in self.procs if n.startswith("worker-")] if self.executor == "CeleryExecutor" else []
        )
        wait_for(
            lambda: all(
                " ready." in (self.workdir / f"{n}.log").read_text(errors="replace") for n in workers
            ),
            240,
            "every Celery worker to be ready",
            list(self.procs.values()),
        )
        wait_for(
            self._dag_registered, 240, "the dag-processor to register 'nightly'", list(self.procs.values())
        )

    def _query(self, sql: str, **params: object) -> list:
        engine = create_engine(self.metadata_url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(sql), params).all())
        finally:
            engine.dispose()

    def _dag_registered(self) -> bool:
        try:
            return bool(self._query("SELECT 1 FROM dag WHERE dag_id = 'nightly'"))
        except Exception:  # the table appears with the first parse
            return False

    def run_date(self, run_date: dt.date, timeout_s: float = 900) -> str:
        """Trigger the nightly DAG for ``run_date`` and wait for it; returns the run's final state."""
        logical = dt.datetime.combine(run_date, dt.time(), tzinfo=dt.UTC).isoformat()
        run_id = f"scaleout__{run_date.isoformat()}"
        self._cli("dags", "trigger", "nightly", "--run-id", run_id, "--logical-date", logical)
        self.run_id = run_id
        state: list[str] = []

        def finished() -> bool:
            rows = self._query("SELECT state FROM dag_run WHERE dag_id='nightly' AND run_id=:r", r=run_id)
            state[:] = [str(rows[0][0])] if rows else []
            return bool(state) and state[0] in ("success", "failed")

        wait_for(finished, timeout_s, f"DAG run {run_id}", list(self.procs.values()))
        return state[0]

    def task_hosts(self) -> list[tuple[str, int, str, str]]:
        """(task_id, map_index, hostname, state) of every task instance of the last triggered run."""
        return [
            (str(t), int(m), str(h or ""), str(s))
            for t, m, h, s in self._query(
                "SELECT task_id, map_index, hostname, state FROM task_instance "
                "WHERE dag_id='nightly' AND run_id=:r ORDER BY task_id, map_index",
                r=self.run_id,
            )
        ]

    def log_tail(self, n_chars: int = 3000) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-n_chars:]}")
        for path in sorted((self.workdir / "airflow" / "logs").rglob("*.log"))[-4:]:
            parts.append(f"--- {path}\n{path.read_text(errors='replace')[-n_chars:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for log in self.logs:
            log.close()
        shutil.rmtree(self.workdir / "airflow" / "dags", ignore_errors=True)
