"""One numerical thread per process unless the user asks for more: a CLI command in a fresh process sees
torch on one thread and OpenMP told not to spin; OMP_NUM_THREADS set by the user wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# A command added to the real CLI for the probe: it runs after the root callback, as every command does.
PROBE = """
import json, os
from personalize.cli import app

@app.command("probe-threads")
def probe() -> None:
    import torch
    print("JSON" + json.dumps({"torch": torch.get_num_threads(),
                               "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                                                                   "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}))

app(["probe-threads"])
"""


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "OPENBLAS_"))}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], env=clean | env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("JSON", 1)[1])


def test_a_cli_command_runs_torch_on_one_thread_without_spinning():
    seen = _probe()
    assert seen["torch"] == 1
    assert seen["env"] == {
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to tell 2 threads from 1")
def test_threads_the_user_asked_for_are_kept():
    seen = _probe(OMP_NUM_THREADS="2", OMP_WAIT_POLICY="ACTIVE")
    assert seen["torch"] == 2 and seen["env"]["OMP_WAIT_POLICY"] == "ACTIVE"
    assert seen["env"]["MKL_NUM_THREADS"] == seen["env"]["OPENBLAS_NUM_THREADS"] == "2"
