"""Real listening data in: a Spotify extended-history export imported (rows/s) beside the product's own
events CSV of the same plays ingested in the same run (the anchor), and the pull from an app's PostgreSQL
database (events/s) beside the same CSV into the same database, plus a second pull with nothing new.

    .venv/bin/python bench/bench_import.py            # 1M plays
    .venv/bin/python bench/bench_import.py --quick    # 200k plays
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from personalize.context import make_context
from personalize.db.session import upgrade
from personalize.ingest import ingest_catalog, ingest_events
from personalize.ingest.exports import import_export
from personalize.ingest.pull import Source, pull

PG_ADMIN_URL = os.environ.get("PERSONALIZE_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
PLAYS_PER_FILE = 16_000  # about what Spotify puts in one Streaming_History_Audio_*.json
BASE62 = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))


def make_world(n_plays: int, n_tracks: int, folder: Path, seed: int) -> tuple[Path, Path, Path, pd.DataFrame]:
    """A catalog (half its tracks with a Spotify URI, all with artist and title), the plays as a Spotify
    export zip and as the product's own events CSV (the same rows)."""
    rng = np.random.default_rng(seed)
    uris = ["".join(rng.choice(BASE62, 22)) for _ in range(n_tracks)]
    catalog = pd.DataFrame(
        {
            "track_id": [f"trk{i:06d}" for i in range(n_tracks)],
            "title": [f"Song number {i} of the year" for i in range(n_tracks)],
            "artist": [f"Band {i % 997}" for i in range(n_tracks)],
            "duration_s": rng.uniform(120, 420, n_tracks).round(1),
            "tempo_bpm": 100.0,
            "key": "C major",
            "meter": "4/4",
            "programs": "0",
            "spotify_uri": [f"spotify:track:{u}" if i % 2 == 0 else "" for i, u in enumerate(uris)],
        }
    )
    catalog_path = folder / "catalog.csv"
    catalog.to_csv(catalog_path, index=False)
    track = rng.integers(0, n_tracks, n_plays)
    ms = (rng.uniform(0.05, 1.0, n_plays) * catalog["duration_s"].to_numpy()[track] * 1000).astype(np.int64)
    start = pd.Timestamp("2026-01-01", tz="UTC").value // 1000
    ts_us = np.sort(start + rng.integers(0, 300 * 86_400 * 1_000_000, n_plays))
    ts = pd.to_datetime(ts_us, unit="us", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ")
    reasons = rng.choice(["trackdone", "fwdbtn", "endplay", "logout"], n_plays, p=[0.6, 0.25, 0.1, 0.05])
    zip_path = folder / "my_spotify_data.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for part, lo in enumerate(range(0, n_plays, PLAYS_PER_FILE)):
            plays = [
                {
                    "ts": ts[i],
                    "username": "bench-user",
                    "platform": "android",
                    "ms_played": int(ms[i]),
                    "conn_country": "DE",
                    "ip_addr": "192.0.2.1",
                    "master_metadata_track_name": catalog["title"].iat[track[i]],
                    "master_metadata_album_artist_name": catalog["artist"].iat[track[i]],
                    "master_metadata_album_album_name": "Album",
                    "spotify_track_uri": f"spotify:track:{uris[track[i]]}",
                    "episode_name": None,
                    "episode_show_name": None,
                    "spotify_episode_uri": None,
                    "reason_start": "clickrow",
                    "reason_end": str(reasons[i]),
                    "shuffle": False,
                    "skipped": None,
                    "offline": False,
                    "offline_timestamp": 0,
                    "incognito_mode": False,
                }
                for i in range(lo, min(lo + PLAYS_PER_FILE, n_plays))
            ]
            name = f"Spotify Extended Streaming History/Streaming_History_Audio_2026_{part}.json"
            archive.writestr(name, json.dumps(plays))
    kind = np.where(reasons == "trackdone", "complete", np.where(reasons == "fwdbtn", "skip", "play"))
    events = pd.DataFrame(
        {
            "event_id": [f"ev{i:09d}" for i in range(n_plays)],
            "listener_id": "bench-user",
            "track_id": catalog["track_id"].to_numpy()[track],
            "ts": ts,
            "ms_played": ms,
            "kind": kind,
        }
    )
    csv_path = folder / "events.csv"
    events.to_csv(csv_path, index=False)
    return zip_path, csv_path, catalog_path, events


def fresh_sqlite(folder: Path, tag: str):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{folder / f'{tag}-{uuid.uuid4().hex[:6]}.db'}"
    upgrade(url)
    return make_context(data_dir=folder, database_url=url)


def fresh_pg(folder: Path):  # type: ignore[no-untyped-def]
    name = f"bench_import_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    upgrade(url)
    return name, make_context(data_dir=folder, database_url=url)


def drop_pg(name: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def bench_spotify(folder: Path, zip_path: Path, csv_path: Path, catalog_path: Path, repeat: int) -> dict:
    export_rates, csv_rates = [], []
    for r in range(repeat):
        for which in ("export", "csv") if r % 2 == 0 else ("csv", "export"):
            ctx = fresh_sqlite(folder, which)
            try:
                ingest_catalog(ctx, catalog_path)
                if which == "export":
                    report = import_export(ctx, zip_path, "spotify", unmatched_csv=folder / "unmatched.csv")
                    export_rates.append(report.rows_per_s)
                else:
                    report = ingest_events(ctx, csv_path)
                    csv_rates.append(report.rows_per_s)
                assert report.ingested == report.rows_read, report.to_dict()
                print(f"  {which}: {report.rows_read:,} rows in {report.elapsed_s:.1f} s", flush=True)
            finally:
                ctx.engine.dispose()
                Path(ctx.settings.resolved_database_url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    export, anchor = statistics.median(export_rates), statistics.median(csv_rates)
    return {
        "spotify_rows_per_s": export,
        "csv_rows_per_s": anchor,
        "ratio": export / anchor,
        "spotify_runs": export_rates,
        "csv_runs": csv_rates,
    }


def bench_pull(folder: Path, events: pd.DataFrame, csv_path: Path, catalog_path: Path) -> dict:
    schema = f"app_bench_{uuid.uuid4().hex[:8]}"
    app = create_engine(PG_ADMIN_URL)
    table = events.rename(columns={"listener_id": "user_id", "track_id": "song_id", "ts": "played_at"})
    with app.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(
            text(
                f'CREATE TABLE "{schema}".plays (id bigint PRIMARY KEY, event_id text, user_id text, '
                "song_id text, played_at timestamptz, ms_played integer, kind text)"
            )
        )
    table.insert(0, "id", np.arange(1, len(table) + 1))
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, header=False)
    raw = app.raw_connection()
    try:
        with (
            raw.driver_connection.cursor() as cur,
            cur.copy(f'COPY "{schema}".plays FROM STDIN (FORMAT csv)') as copy,
        ):
            copy.write(buffer.getvalue())
        raw.driver_connection.commit()
    finally:
        raw.close()
    source = Source(
        name="bench",
        url=PG_ADMIN_URL,
        table=f"{schema}.plays",
        watermark="id",
        columns={
            "event_id": "event_id",
            "listener_id": "user_id",
            "track_id": "song_id",
            "ts": "played_at",
            "ms_played": "ms_played",
        },
        kind={"column": "kind"},
    )
    out: dict = {}
    try:
        name, ctx = fresh_pg(folder)
        try:
            ingest_catalog(ctx, catalog_path)
            report = pull(ctx, source)
            assert report.ingested == len(events), report.to_dict()
            started = time.perf_counter()
            empty = pull(ctx, source)
            out["second_pull_s"] = time.perf_counter() - started
            assert empty.rows_read == 0
            out["pull_events_per_s"] = report.rows_per_s
            print(
                f"  pull: {report.rows_read:,} rows in {report.elapsed_s:.1f} s; again {out['second_pull_s']:.3f} s"
            )
        finally:
            ctx.engine.dispose()
            drop_pg(name)
        name, ctx = fresh_pg(folder)
        try:
            ingest_catalog(ctx, catalog_path)
            anchor = ingest_events(ctx, csv_path)
            out["csv_rows_per_s"] = anchor.rows_per_s
            out["ratio"] = out["pull_events_per_s"] / anchor.rows_per_s
            print(f"  csv into PostgreSQL: {anchor.rows_read:,} rows in {anchor.elapsed_s:.1f} s")
        finally:
            ctx.engine.dispose()
            drop_pg(name)
    finally:
        with app.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        app.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--plays", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="200k plays")
    parser.add_argument("--tracks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (median quoted)")
    parser.add_argument("--skip-pull", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("var/bench/import.json"))
    args = parser.parse_args()
    n_plays = 200_000 if args.quick else args.plays
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        folder = Path(tmp)
        zip_path, csv_path, catalog_path, events = make_world(n_plays, args.tracks, folder, args.seed)
        print(f"{n_plays:,} plays, {args.tracks:,} tracks; export zip {zip_path.stat().st_size / 1e6:.0f} MB")
        result = {"plays": n_plays, "tracks": args.tracks, "load_avg_1min": os.getloadavg()[0]}
        result["spotify_vs_csv_sqlite"] = bench_spotify(folder, zip_path, csv_path, catalog_path, args.repeat)
        if not args.skip_pull:
            result["pull_postgres"] = bench_pull(folder, events, csv_path, catalog_path)
    s = result["spotify_vs_csv_sqlite"]
    print(
        f"Spotify export import: {s['spotify_rows_per_s']:,.0f} rows/s, own-schema CSV {s['csv_rows_per_s']:,.0f} "
        f"rows/s (ratio {s['ratio']:.2f}, medians of {args.repeat}, SQLite)"
    )
    if "pull_postgres" in result:
        p = result["pull_postgres"]
        print(
            f"PostgreSQL pull: {p['pull_events_per_s']:,.0f} events/s beside the CSV's {p['csv_rows_per_s']:,.0f} "
            f"rows/s (ratio {p['ratio']:.2f}); a second pull with nothing new: {p['second_pull_s']:.3f} s"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
