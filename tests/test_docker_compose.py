"""The compose deployment, for real: the images built on the Debian base (`make images`' steps, no image
registry), then PostgreSQL, Redis, Airflow (api-server, scheduler, dag-processor, triggerer), two Celery
workers and the API started with compose; a small simulated world loaded from inside a container; the
nightly DAG run to success on the two workers; a published playlist and its audio fetched from the API
container; and every playlist still served after `down` and `up` again.

Skips, loudly, only where Docker cannot start at all; with PERSONALIZE_REQUIRE_DOCKER=1 (CI) it fails
instead."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from airflow_cluster import free_port
from nightly_world import NIGHT_SETTINGS, WORLD_END

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
REQUIRE_DOCKER = os.environ.get("PERSONALIZE_REQUIRE_DOCKER") == "1"
AIRFLOW_SERVICES = (
    "init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
RUN_ID = f"docker__{WORLD_END.isoformat()}"


def _docker_problem() -> str | None:
    """Why Docker cannot be used here, or None; starts the engine first when it is installed but down."""
    if shutil.which("docker") is None:
        return "the docker client is not installed (apt-get install docker.io)"
    if subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode != 0:
        started = subprocess.run([str(DOCKER / "start-dockerd")], capture_output=True, text=True, timeout=120)
        if started.returncode != 0:
            return f"the Docker engine is not running and could not be started: {started.stderr.strip()}"
    if _compose_client() is None:
        return "no compose client (apt-get install docker-compose, or the docker compose plugin)"
    return None


def _compose_client() -> list[str] | None:
    if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60).returncode == 0:
        return ["docker", "compose"]
    client = shutil.which("docker-compose")
    return [client] if client else None


@dataclass
class Stack:
    """One compose project of docker/compose.yaml plus the test's small-night settings."""

    project: str
    override: Path
    env: dict[str, str]
    api_port: int
    timings_s: dict[str, float] = field(default_factory=dict)

    def compose(self, *args: str, timeout_s: float = 600, check: bool = True) -> str:
        client = _compose_client()
        assert client is not None
        cmd = [*client, "-p", self.project, "-f", str(DOCKER / "compose.yaml"), "-f", str(self.override)]
        proc = subprocess.run(
            [*cmd, *args], env=self.env, capture_output=True, text=True, timeout=timeout_s, cwd=REPO
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"compose {' '.join(args)} exited with {proc.returncode}:\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
            )
        return proc.stdout

    def sql(self, database: str, query: str) -> list[list[str]]:
        """Rows of a query run by psql inside the postgres container (unaligned, '|'-separated)."""
        out = self.compose(
            "exec", "-T", "postgres", "psql", "-U", "personalize", "-d", database, "-v", "ON_ERROR_STOP=1",
            "-tAc", query, timeout_s=120,
        )  # fmt: skip
        return [line.split("|") for line in out.splitlines() if line]

    def up(self) -> None:
        t = time.monotonic()
        self.compose("up", "-d", "--scale", "airflow-worker=2", timeout_s=900)
        wait_for(self.api_healthy, 300, "the API to answer /healthz")
        self.timings_s.setdefault("up_s", round(time.monotonic() - t, 1))

    def api_healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.api_port}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def worker_hostnames(self) -> set[str]:
        ids = self.compose("ps", "-q", "airflow-worker").split()
        out = subprocess.run(
            ["docker", "inspect", "-f", "{{.Config.Hostname}}", *ids],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        return set(out.split())

    def task_logs(self, run_id: str, n_lines: int = 40) -> str:
        """The end of every task log of a run, from the worker containers (where Airflow writes them)."""
        parts = []
        for container in self.compose("ps", "-q", "airflow-worker").split():
            script = (
                f'for f in $(find /opt/airflow/logs -path "*run_id={run_id}*" -name "*.log"); '
                f'do echo "--- $f"; tail -n {n_lines} "$f"; done'
            )
            proc = subprocess.run(
                ["docker", "exec", container, "bash", "-c", script],
                capture_output=True,
                text=True,
                timeout=60,
            )
            parts.append(proc.stdout + proc.stderr)
        return "\n".join(parts)

    def logs(self, n_lines: int = 60) -> str:
        return self.compose("logs", "--no-color", "--tail", str(n_lines), timeout_s=120, check=False)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(5)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _run(cmd: list[str], timeout_s: float) -> float:
    """Runs a build step; returns its wall time in seconds."""
    t = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return round(time.monotonic() - t, 1)


def _night_environment() -> dict[str, str]:
    """A night of a few short tracks (the nightly tests' settings), run only when the test triggers it."""
    env = {f"PERSONALIZE_{key.upper()}": str(value) for key, value in NIGHT_SETTINGS.items()}
    env |= {
        "PERSONALIZE_DAG_RETRIES": "0",  # a failing task fails the run at once, with its log
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # no scheduled night for today on top of it
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
    }
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    problem = _docker_problem()
    if problem is not None:
        if REQUIRE_DOCKER:
            pytest.fail(f"Docker required (PERSONALIZE_REQUIRE_DOCKER=1) but unusable: {problem}")
        print(f"\n*** SKIPPING the compose deployment test: {problem} ***")
        pytest.skip(f"*** Docker unusable: {problem} ***")

    workdir = tmp_path_factory.mktemp("compose")
    override = workdir / "compose.test.yaml"
    night = _night_environment()
    override.write_text(yaml.safe_dump({"services": {s: {"environment": night} for s in AIRFLOW_SERVICES}}))
    api_port = free_port()
    env = dict(os.environ) | {
        "PERSONALIZE_API_PORT": str(api_port),
        "PERSONALIZE_PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW_API_PORT": str(free_port()),
        "PERSONALIZE_SIGNING_SECRET": secrets.token_hex(16),
        "AIRFLOW_JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW_SECRET_KEY": secrets.token_hex(16),
    }
    stack = Stack(f"personalize-test-{uuid.uuid4().hex[:8]}", override, env, api_port)

    # `make images`, step by step, timed: the base image (debootstrap where no registry serves Debian),
    # the wheel folder (this machine's pip), then every image of compose.yaml.
    stack.timings_s["base_image_s"] = _run([str(DOCKER / "build-base")], 900)
    stack.timings_s["wheels_s"] = _run([str(DOCKER / "build-wheels"), sys.executable], 900)
    t = time.monotonic()
    stack.compose("build", timeout_s=1800)
    stack.timings_s["images_s"] = round(time.monotonic() - t, 1)
    try:
        stack.up()
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        print(f"\ncompose deployment timings (s): {json.dumps(stack.timings_s)}")
        stack.compose("down", "-v", "--remove-orphans", timeout_s=300, check=False)


def _published(stack: Stack) -> list[list[str]]:
    """Every published playlist's items: listener, date, position, track, reason."""
    return stack.sql(
        "personalize",
        "SELECT p.listener_id, p.run_date, i.position, i.track_id, i.reason FROM playlists p "
        "JOIN playlist_items i ON i.playlist_id = p.id WHERE p.status = 'published' "
        "ORDER BY p.listener_id, p.run_date, i.position",
    )


def _fetch_playlist_and_audio(stack: Stack, key: str, listener_id: str) -> tuple[list[str], bytes]:
    """What the app sees: the listener's playlist (track ids) and the first track's audio."""
    base = f"http://127.0.0.1:{stack.api_port}"
    resp = httpx.get(f"{base}/v1/listeners/{listener_id}/playlist", headers={"X-API-Key": key}, timeout=30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["items"], f"{listener_id}'s published playlist has no items: {body}"
    audio = httpx.get(body["items"][0]["audio_url"], timeout=60)
    assert audio.status_code == 200, audio.text[:500]
    assert audio.headers["content-type"].startswith("audio/ogg")
    return [item["track_id"] for item in body["items"]], audio.content


def test_compose_runs_the_night_on_two_workers_and_keeps_playlists_across_restart(stack: Stack) -> None:
    t = time.monotonic()
    stack.compose(
        "exec", "-T", "api", "personalize", "simulate", "--listeners", "90", "--days", "21", "--seed", "11",
        "--catalog-size", "40", "--end-date", WORLD_END.isoformat(), timeout_s=900,
    )  # fmt: skip
    stack.timings_s["simulate_s"] = round(time.monotonic() - t, 1)

    # Both workers consuming and the DAG parsed before the run is queued, so both can take its tasks.
    def workers_ready() -> bool:
        lines = stack.compose("logs", "--no-color", "airflow-worker", check=False).splitlines()
        return len({line.split("|")[0].strip() for line in lines if " ready." in line}) >= 2

    wait_for(workers_ready, 600, "both Celery workers to be ready")
    wait_for(lambda: bool(stack.sql("airflow", "SELECT 1 FROM dag WHERE dag_id = 'nightly'")), 600, "the DAG")

    t = time.monotonic()
    stack.compose(
        "exec", "-T", "airflow-scheduler", "airflow", "dags", "trigger", "nightly", "--run-id", RUN_ID,
        "--logical-date", f"{WORLD_END.isoformat()}T00:00:00+00:00", timeout_s=300,
    )  # fmt: skip
    state: list[str] = []

    def finished() -> bool:
        rows = stack.sql(
            "airflow", f"SELECT state FROM dag_run WHERE dag_id = 'nightly' AND run_id = '{RUN_ID}'"
        )
        state[:] = [rows[0][0]] if rows else []
        return bool(state) and state[0] in ("success", "failed")

    wait_for(finished, 1500, f"DAG run {RUN_ID}")
    stack.timings_s["night_s"] = round(time.monotonic() - t, 1)
    tasks = stack.sql(
        "airflow",
        f"SELECT task_id, map_index, state, hostname FROM task_instance WHERE run_id = '{RUN_ID}' "
        "ORDER BY start_date",
    )
    assert state == ["success"], f"the night ended {state}: {tasks}\n{stack.task_logs(RUN_ID)}"

    # Every task ran on one of the two worker containers, and both took a share.
    workers = stack.worker_hostnames()
    assert len(workers) == 2
    assert all(st == "success" for _, _, st, _ in tasks), tasks
    used = {host for _, _, _, host in tasks}
    assert used == workers, f"tasks ran on {sorted(used)}, the workers are {sorted(workers)}"
    assert any(task == "render" for task, _, _, _ in tasks)

    before = _published(stack)
    assert before, "the night published no playlist"
    listener_id = before[0][0]
    key = stack.compose("exec", "-T", "api", "personalize", "apikey", "create", "docker-test").split()[-1]
    tracks, audio = _fetch_playlist_and_audio(stack, key, listener_id)
    assert tracks == [row[3] for row in before if row[0] == listener_id and row[1] == WORLD_END.isoformat()]
    assert audio[:4] == b"OggS" and len(audio) > 10_000

    # Down and up again: the volumes keep the database and the audio, so nothing the app sees changes.
    t = time.monotonic()
    stack.compose("down", timeout_s=300)
    stack.up()
    stack.timings_s["down_up_s"] = round(time.monotonic() - t, 1)
    assert _published(stack) == before
    assert _fetch_playlist_and_audio(stack, key, listener_id) == (tracks, audio)
