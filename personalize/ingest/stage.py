"""The ingest stage: listening events and catalog files dropped into the inbox since the last night go in
before profiles are built.

Inbox layout (``PERSONALIZE_INBOX_DIR``, default ``<data_dir>/inbox``)::

    events/*.csv|*.parquet    listening events (the ``personalize ingest events`` format; also .gz/.bz2/.zst/.zip)
    catalog/*.csv|*.parquet   catalog rows (the ``personalize ingest catalog`` format)
    done/<run_date>/...       files that went in; their bad rows are in quarantined_rows
    failed/<run_date>/...     files that could not be read at all, each beside a ``.reason.txt``

Between the catalog and the events files, every database source of the sources file is pulled from its
watermark (:mod:`personalize.ingest.pull`; no sources file, nothing to pull). A file is moved only after its
rows are stored, so a crash leaves it in the inbox and the next run takes it again (ingest skips rows
already present, so nothing is counted twice). Catalog files go first, so the same night's events can name
the new tracks. Nothing anyone dropped is ever deleted.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from personalize.context import Context
from personalize.ingest.catalog import ingest_catalog
from personalize.ingest.events import ingest_events
from personalize.ingest.pull import pull_all
from personalize.ingest.report import IngestFileError, IngestReport

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".gz", ".bz2", ".zst", ".zip")
KINDS: tuple[tuple[str, Callable[..., IngestReport]], ...] = (
    ("catalog", ingest_catalog),
    ("events", ingest_events),
)


def inbox_dir(ctx: Context) -> Path:
    return Path(ctx.settings.inbox_dir or Path(ctx.settings.data_dir) / "inbox")


def _waiting(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def _move(path: Path, target_dir: Path) -> Path:
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / path.name
    n = 1
    while target.exists():  # a file of the same name arrived on an earlier night: keep both
        target = target_dir / f"{path.stem}.{n}{path.suffix}"
        n += 1
    shutil.move(str(path), target)
    return target


def run(ctx: Context, run_date: dt.date) -> dict[str, Any]:
    """Ingest every file waiting in the inbox; returns counts per kind and the files that failed."""
    inbox = inbox_dir(ctx)
    summary: dict[str, Any] = {"inbox": str(inbox), "files": 0, "files_failed": 0}
    failed: list[str] = []
    for kind, ingest in KINDS:
        if kind == "events":  # after the catalog, so pulled plays can name tracks that came in tonight
            summary.update(pull_all(ctx))
        totals = IngestReport(source=kind)
        for path in _waiting(inbox / kind):
            try:
                report = ingest(ctx, path)
            except IngestFileError as exc:
                moved = _move(path, inbox / "failed" / run_date.isoformat() / kind)
                moved.with_name(moved.name + ".reason.txt").write_text(f"{exc}\n", encoding="utf-8")
                failed.append(f"{kind}/{path.name}: {exc}")
                log.warning("inbox file %s not ingested: %s (moved to %s)", path, exc, moved)
                continue
            totals.merge(report)
            _move(path, inbox / "done" / run_date.isoformat() / kind)
            summary["files"] += 1
        summary[f"{kind}_rows_read"] = totals.rows_read
        summary[f"{kind}_ingested"] = totals.ingested
        summary[f"{kind}_quarantined"] = totals.quarantined_total
    summary["files_failed"] = len(failed)
    summary["failed"] = failed
    return summary
