"""Worker identity for distributed runs: the name Airflow records for the worker that ran each task."""

from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    """``PERSONALIZE_WORKER_NAME`` when set (several workers on one host, or containers named by role),
    else the host's name. Point Airflow's ``[core] hostname_callable`` here:
    ``AIRFLOW__CORE__HOSTNAME_CALLABLE=personalize.workers.worker_hostname``."""
    return os.environ.get("PERSONALIZE_WORKER_NAME") or socket.gethostname()
