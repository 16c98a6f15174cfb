"""Worker processes: their names, one numerical thread each, who they are (PID and start time) and dying
with the process that started them.

Every process the product starts works on one core: the CLI, the Airflow tasks and the pools' workers
call :func:`one_thread_per_process` first thing, so torch, OpenMP, MKL and OpenBLAS neither oversubscribe
a machine already kept busy nor spin idle threads. A pool's worker calls :func:`die_with_parent` first
thing: it goes when its parent goes, even after a ``kill -9``, instead of living on as an orphan.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# Thread counts read by the numerical runtimes when they load (torch takes the smallest of the first two).
THREAD_COUNT_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PARENT_POLL_S = 1.0


def worker_hostname() -> str:
    """``PERSONALIZE_WORKER_NAME`` when set (several workers on one host, or containers named by role),
    else the host's name. Point Airflow's ``[core] hostname_callable`` here:
    ``AIRFLOW__CORE__HOSTNAME_CALLABLE=personalize.workers.worker_hostname``."""
    return os.environ.get("PERSONALIZE_WORKER_NAME") or socket.gethostname()


def one_thread_per_process() -> None:
    """Keep this process's numerical libraries on one thread, unless the user said otherwise.

    The thread counts of :data:`THREAD_COUNT_ENV` left unset take the first one the user set, else 1
    (runtimes loaded from now on read them, and so do child processes); ``OMP_WAIT_POLICY`` defaults to
    ``PASSIVE``, so an idle OpenMP thread sleeps instead of spinning (on a busy machine libgomp's spinning
    was most of the generate stage's CPU samples). Pools already loaded are limited too (threadpoolctl),
    and torch's intra-op threads when torch is already imported (an import after this reads the
    variables itself). Call it before the heavy imports.
    """
    chosen = next((os.environ[name] for name in THREAD_COUNT_ENV if os.environ.get(name)), "1")
    for name in THREAD_COUNT_ENV:
        os.environ.setdefault(name, chosen)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    threads = _positive_int(chosen)
    if "numpy" in sys.modules or "torch" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def _positive_int(text: str) -> int:
    try:
        return max(1, int(text.split(",")[0]))
    except ValueError:
        return 1


@dataclass(frozen=True)
class ProcessId:
    """A process as a PID and its start time (clock ticks after boot, Linux ``/proc``; None elsewhere), so
    a PID the kernel later hands to another process is not mistaken for the first one."""

    pid: int
    start_ticks: int | None

    @classmethod
    def of(cls, pid: int) -> ProcessId:
        return cls(pid, process_start_ticks(pid))

    def alive(self) -> bool:
        """Whether this very process still runs (a zombie, or a new process on its PID, does not count)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # it exists, under another user
            pass
        stat = _proc_stat(self.pid)
        if stat is None:
            return sys.platform != "linux"  # no /proc to ask: the signal check is all there is
        state, start = stat
        if state in ("Z", "X"):  # exited, not yet reaped by its parent
            return False
        return self.start_ticks is None or start == self.start_ticks


def this_process() -> ProcessId:
    return ProcessId.of(os.getpid())


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (``/proc/<pid>/stat``); None without /proc
    or when there is no such process."""
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def _proc_stat(pid: int) -> tuple[str, int] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count fields after its end.
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])  # field 3 is the state, field 22 the start time


def die_with_parent(parent: ProcessId, kernel_signal: bool = True) -> None:
    """Make this worker process end when ``parent`` (the process whose pool it serves) ends.

    SIGTERM gets its default action back (a handler inherited from a forked parent, such as an Airflow
    task's, must not keep a worker alive); on Linux the kernel sends SIGKILL when the process that forked
    this one exits (``prctl(PR_SET_PDEATHSIG)``); and a daemon thread checks every second that ``parent``
    still runs, for the cases the kernel does not cover (a worker forked by a fork server, other systems).
    Also keeps the worker on one numerical thread (:func:`one_thread_per_process`).

    ``kernel_signal=False`` leaves the kernel out, for a pool that replaces its workers
    (``maxtasksperchild``): the kernel watches the *thread* that forked a worker, and a replacement is forked
    by the pool's own handler thread, which ends when the pool closes. Its idle workers, each waiting on the
    task queue's shared lock, would be killed holding it, and the pool's clean-up would then wait on that
    lock forever. The watchdog thread alone ends such workers, within a second of their parent.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform == "linux" and kernel_signal:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            zero = ctypes.c_ulong(0)
            libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), zero, zero, zero)
    if not parent.alive():  # gone before the kernel was told to watch it
        os._exit(1)
    watchdog = threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True)
    watchdog.start()
    one_thread_per_process()


def _watch_parent(parent: ProcessId) -> None:
    while parent.alive():
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGKILL)
