"""Runs every benchmark in bench/ one after another (``--quick`` sizes unless ``--full``), each printing its
figures beside its anchor measured in the same run; a failing bench is reported and the others go on."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCHES = ("ingest", "import", "simulate", "taste", "generate", "render", "api", "nightly", "contention")


def main(argv: list[str]) -> int:
    full = "--full" in argv
    only = [a for a in argv if not a.startswith("--")] or list(BENCHES)
    here = Path(__file__).resolve().parent
    failed: list[str] = []
    for name in only:
        cmd = [sys.executable, str(here / f"bench_{name}.py"), *([] if full else ["--quick"])]
        print(f"\n=== bench {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"=== bench {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
