"""Listening history exported from other services, turned into events and ingested like any file.

Formats (each read as its public description documents it):

==========================  ===========================================================================
``spotify`` extended        ``Streaming_History_Audio_*.json`` (or the zip holding them): a JSON array of
                            plays with ``ts`` (UTC, when the play ended), ``ms_played``,
                            ``master_metadata_track_name``, ``master_metadata_album_artist_name``,
                            ``spotify_track_uri``, ``reason_end``, ``skipped``, ``username``
``spotify`` account data    ``StreamingHistory*.json``: ``endTime`` (UTC, minutes), ``artistName``,
                            ``trackName``, ``msPlayed``
``listenbrainz``            a JSON array or JSON Lines of listens (or a zip of them): ``listened_at``
                            (Unix seconds), ``track_metadata`` with ``artist_name``, ``track_name`` and
                            ``additional_info`` / ``mbid_mapping`` (``recording_mbid``, ``isrc``,
                            ``spotify_id``), ``user_name``
``lastfm``                  a scrobble CSV: ``artist, album, track, date`` without a header
                            (``31 Jan 2021 16:20``, UTC), or with a header naming ``artist``, ``track``,
                            ``album`` and ``date``/``utc_time``/``uts``, and ``track_mbid``
==========================  ===========================================================================

Mapping to events: the listener is ``--listener`` when given, else the export's user name; ``ts`` as the
export gives it (UTC); ``event_id`` a hash of listener, time, track and milliseconds (re-importing adds
nothing). Kind: Spotify's ``skipped`` or a ``reason_end`` of ``fwdbtn``/``backbtn`` is ``skip``,
``trackdone`` is ``complete``, anything else ``play``; the older Spotify format has no reasons, so under
30 s is ``skip`` (Spotify's own threshold for a stream), else ``play``. A ListenBrainz listen or Last.fm
scrobble is a ``play`` of the whole catalog track (a scrobble is sent once a track was mostly heard).
Tracks are matched by :mod:`personalize.ingest.match`; a play with no match is quarantined as
``unmatched_track`` and its track listed in the unmatched CSV (catalog columns, to fill in and ingest);
a podcast episode or audiobook is quarantined as ``not_a_track``.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from personalize.context import Context
from personalize.ids import id_problem, normal_id
from personalize.ingest.events import ingest_chunks
from personalize.ingest.match import DEFAULT_THRESHOLD, SCHEMES, CatalogIndex, external_id
from personalize.ingest.read import Chunk, Quarantine, check_readable, raw_json
from personalize.ingest.report import IngestFileError, IngestReport
from personalize.ingest.unpack import compression_of, detect_encoding, open_input, zip_members
from personalize.ingest.validate import hash_ids

FORMATS = ("spotify", "listenbrainz", "lastfm")
SKIP_BELOW_MS = 30_000  # the older Spotify format: a play shorter than this did not count as a stream
UNMATCHED_COLUMNS = (
    "track_id", "title", "artist", "duration_s", "tempo_bpm", "key", "meter", "programs",
    "spotify_uri", "isrc", "mbid", "plays", "first_played", "last_played",
)  # fmt: skip


@dataclass
class Plays:
    """One export file's plays, column by column (``None`` where the export has no value)."""

    member: str  # the file inside a zip, or the file's name
    ts: pd.Series  # UTC timestamps
    listener: list[object]
    artist: list[object]
    title: list[object]
    ms_played: np.ndarray  # NaN where the export has none
    kind: list[object]  # None: decided after matching
    ids: dict[str, list[object]]  # scheme -> values as exported
    is_track: np.ndarray  # False for podcast episodes, audiobooks and rows naming no track
    records: list[dict]  # the raw plays, for the quarantine


def _json_records(data: bytes, name: str) -> list[dict]:
    text = data.decode("utf-8-sig")
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            records = json.loads(text)
        else:  # JSON Lines
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise IngestFileError(
            f"{name}: not readable JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "export it again or check that the file is whole."
        ) from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise IngestFileError(f"{name}: expected a list of plays (JSON objects), found something else.")
    return records


def _json_files(path: Path, pattern: re.Pattern[str] | None) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of each JSON file: the file itself, or a zip's members matching ``pattern``
    in name order (a .gz/.bz2/.zst is unpacked first)."""
    compression = compression_of(path)
    if compression == "zip":
        members = [
            m for m in zip_members(path, (".json", ".jsonl", ".ndjson")) if not pattern or pattern.search(m)
        ]
        if not members:
            raise IngestFileError(
                f"{path}: the zip holds no listening history files"
                + (f" (looked for names like {pattern.pattern!r})" if pattern else "")
                + "; give the export's zip or its JSON files."
            )
        with zipfile.ZipFile(path) as archive:
            for member in sorted(members):
                yield member, archive.read(member)
        return
    with open_input(path) as plain:
        yield path.name, plain.path.read_bytes()


SPOTIFY_AUDIO = re.compile(
    r"(Streaming_History_Audio|StreamingHistory(?!_?podcast)|endsong)[^/]*\.json$", re.I
)


def _spotify(path: Path) -> Iterator[Plays]:
    for member, data in _json_files(path, SPOTIFY_AUDIO):
        records = _json_records(data, f"{path} ({member})" if member != path.name else str(path))
        if records and "endTime" in records[0]:
            yield _spotify_account_data(member, records)
        else:
            yield _spotify_extended(member, records)


def _get(records: list[dict], key: str) -> list[object]:
    return [r.get(key) for r in records]


def _spotify_extended(member: str, records: list[dict]) -> Plays:
    uris = _get(records, "spotify_track_uri")
    titles = _get(records, "master_metadata_track_name")
    reason_end = _get(records, "reason_end")
    skipped = _get(records, "skipped")
    kind = [
        "skip" if s is True or r in ("fwdbtn", "backbtn") else "complete" if r == "trackdone" else "play"
        for r, s in zip(reason_end, skipped, strict=True)
    ]
    return Plays(
        member=member,
        ts=pd.to_datetime(
            pd.Series(_get(records, "ts"), dtype=object), utc=True, errors="coerce", format="ISO8601"
        ),
        listener=_get(records, "username"),
        artist=_get(records, "master_metadata_album_artist_name"),
        title=titles,
        ms_played=pd.to_numeric(
            pd.Series(_get(records, "ms_played"), dtype=object), errors="coerce"
        ).to_numpy(float),
        kind=kind,
        ids={"spotify": uris, "isrc": [None] * len(records), "mbid": [None] * len(records)},
        is_track=np.array([bool(u) or bool(t) for u, t in zip(uris, titles, strict=True)], dtype=bool),
        records=records,
    )


def _spotify_account_data(member: str, records: list[dict]) -> Plays:
    ms = pd.to_numeric(pd.Series(_get(records, "msPlayed"), dtype=object), errors="coerce").to_numpy(float)
    titles = _get(records, "trackName")
    return Plays(
        member=member,
        ts=pd.to_datetime(
            pd.Series(_get(records, "endTime"), dtype=object),
            utc=True,
            errors="coerce",
            format="%Y-%m-%d %H:%M",
        ),
        listener=[None] * len(records),
        artist=_get(records, "artistName"),
        title=titles,
        ms_played=ms,
        kind=[None if not np.isfinite(m) or m >= SKIP_BELOW_MS else "skip" for m in ms],
        ids={s: [None] * len(records) for s in SCHEMES},
        is_track=np.array([bool(t) for t in titles], dtype=bool),
        records=records,
    )


def _listenbrainz(path: Path) -> Iterator[Plays]:
    for member, data in _json_files(path, None):
        records = _json_records(data, f"{path} ({member})" if member != path.name else str(path))
        meta = [r.get("track_metadata") or {} for r in records]
        info = [m.get("additional_info") or {} for m in meta]
        mapping = [m.get("mbid_mapping") or {} for m in meta]
        stamps = pd.Series(_get(records, "listened_at"), dtype=object)
        numeric = pd.to_numeric(stamps, errors="coerce")
        ts = pd.to_datetime(numeric, unit="s", utc=True, errors="coerce")
        if ts.isna().any():  # some exports write ISO 8601 instead of Unix seconds
            iso = pd.to_datetime(stamps.where(numeric.isna()), utc=True, errors="coerce", format="ISO8601")
            ts = ts.fillna(iso)
        titles = [m.get("track_name") for m in meta]
        yield Plays(
            member=member,
            ts=ts,
            listener=_get(records, "user_name"),
            artist=[m.get("artist_name") for m in meta],
            title=titles,
            ms_played=np.full(len(records), np.nan),
            kind=["play"] * len(records),
            ids={
                "mbid": [
                    i.get("recording_mbid") or mp.get("recording_mbid")
                    for i, mp in zip(info, mapping, strict=True)
                ],
                "isrc": [i.get("isrc") for i in info],
                "spotify": [i.get("spotify_id") for i in info],
            },
            is_track=np.array([bool(t) for t in titles], dtype=bool),
            records=records,
        )


LASTFM_DATE_FORMATS = ("%d %b %Y %H:%M", "%d %b %Y, %H:%M", "%Y-%m-%d %H:%M:%S", "ISO8601")


def _lastfm(path: Path) -> Iterator[Plays]:
    with open_input(path) as plain:
        encoding, _ = detect_encoding(plain.path)
        text = plain.path.read_text(encoding=encoding, errors="replace")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        raise IngestFileError(f"{path}: the file is empty.")
    first = [c.strip().lower() for c in rows[0]]
    if {"artist", "track"} <= set(first):
        header, rows = first, rows[1:]
    elif len(first) == 4:
        header = ["artist", "album", "track", "date"]
    else:
        raise IngestFileError(
            f"{path}: not a Last.fm scrobble CSV: expected the columns artist, album, track, date (with or "
            f"without a header); the first row has {len(first)} fields."
        )
    width = len(header)
    records = [dict(zip(header, r, strict=False)) for r in rows if any(c.strip() for c in r)]
    ts = pd.Series(pd.NaT, index=range(len(records)), dtype="datetime64[ns, UTC]")
    if "uts" in header:
        ts = pd.to_datetime(
            pd.to_numeric(pd.Series(_get(records, "uts"), dtype=object), errors="coerce"), unit="s", utc=True
        )
    date_column = next((c for c in ("date", "utc_time", "time") if c in header), None)
    if date_column and ts.isna().any():
        dates = pd.Series(_get(records, date_column), dtype=object)
        for fmt in LASTFM_DATE_FORMATS:
            ts = ts.fillna(pd.to_datetime(dates, utc=True, errors="coerce", format=fmt))
    titles = _get(records, "track")
    short = [len(r) < width for r in rows if any(c.strip() for c in r)]
    yield Plays(
        member=path.name,
        ts=ts,
        listener=[None] * len(records),
        artist=_get(records, "artist"),
        title=titles,
        ms_played=np.full(len(records), np.nan),
        kind=["play"] * len(records),
        ids={
            "mbid": _get(records, "track_mbid"),
            "isrc": [None] * len(records),
            "spotify": [None] * len(records),
        },
        is_track=np.array([bool(t) and not s for t, s in zip(titles, short, strict=True)], dtype=bool),
        records=records,
    )


READERS = {"spotify": _spotify, "listenbrainz": _listenbrainz, "lastfm": _lastfm}


class _Unmatched:
    """The tracks no catalog row matched, with how often they were played, for the unmatched CSV."""

    def __init__(self) -> None:
        self.rows: dict[tuple, dict[str, object]] = {}

    def add(
        self, artist: object, title: object, ids: dict[str, str | None], ts: pd.Timestamp, ms: float
    ) -> None:
        key = (str(artist or ""), str(title or ""), *(ids.get(s) or "" for s in SCHEMES))
        row = self.rows.get(key)
        stamp = None if pd.isna(ts) else ts.isoformat()
        if row is None:
            slug = (
                re.sub(r"[^a-z0-9]+", "-", f"{artist or ''} {title or ''}".lower()).strip("-")[:60] or "track"
            )
            self.rows[key] = row = {
                "track_id": slug, "title": title, "artist": artist, "duration_s": "", "tempo_bpm": "",
                "key": "", "meter": "", "programs": "",
                "spotify_uri": f"spotify:track:{ids['spotify']}" if ids.get("spotify") else "",
                "isrc": ids.get("isrc") or "", "mbid": ids.get("mbid") or "", "plays": 0,
                "first_played": stamp, "last_played": stamp, "_longest_ms": 0.0,
            }  # fmt: skip
        row["plays"] = int(row["plays"]) + 1  # type: ignore[call-overload]
        if stamp:
            row["first_played"] = min(filter(None, (row["first_played"], stamp)))  # type: ignore[type-var]
            row["last_played"] = max(filter(None, (row["last_played"], stamp)))  # type: ignore[type-var]
        if np.isfinite(ms):
            row["_longest_ms"] = max(float(row["_longest_ms"]), ms)  # type: ignore[arg-type]

    def write(self, path: Path) -> int:
        rows = sorted(self.rows.values(), key=lambda r: -int(r["plays"]))  # type: ignore[call-overload]
        seen: dict[str, int] = {}
        for row in rows:
            # the longest play of a track completed is a lower bound of its length: a hint for duration_s
            if row["_longest_ms"]:
                row["duration_s"] = f"{float(row['_longest_ms']) / 1000:.1f}"  # type: ignore[arg-type]
            n = seen.get(str(row["track_id"]), 0)
            seen[str(row["track_id"])] = n + 1
            if n:
                row["track_id"] = f"{row['track_id']}-{n + 1}"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=UNMATCHED_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        return len(rows)


BYTES_PER_PLAY = {"spotify": 550, "listenbrainz": 450, "lastfm": 60}  # typical, uncompressed


def _estimate_plays(path: Path, fmt: str) -> int:
    """About how many plays the export holds (its uncompressed size over a typical play's): enough to
    choose between a bulk load and chunk-by-chunk writes, never used as a count."""
    if compression_of(path) == "zip":
        with zipfile.ZipFile(path) as archive:
            size = sum(
                i.file_size for i in archive.infolist() if i.filename.lower().endswith((".json", ".jsonl"))
            )
    else:
        size = path.stat().st_size * (1 if compression_of(path) is None else 8)
    return size // BYTES_PER_PLAY[fmt]


def import_export(
    ctx: Context,
    path: Path,
    fmt: str,
    *,
    listener: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    unmatched_csv: Path | None = None,
    progress: bool = False,
) -> IngestReport:
    """Import an export of ``fmt`` (``spotify``, ``listenbrainz`` or ``lastfm``; see the module's table) as
    listening events: matched plays through the same validation as event files, the rest quarantined
    (``unmatched_track``, ``not_a_track``) and the unmatched tracks written to ``unmatched_csv``.

    ``listener`` is the listener id for every play (required when the export names no user). Raises
    :class:`~personalize.ingest.IngestFileError` when the file cannot be read."""
    if fmt not in READERS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    path = Path(path)
    check_readable(path)
    if listener is not None:
        listener = normal_id(listener.strip())
        problem = id_problem(listener)
        if problem:
            raise IngestFileError(f"{path}: the listener id {listener[:80]!r} {problem}.")
    started = time.perf_counter()
    source = str(path.resolve())
    index = CatalogIndex.load(ctx)
    unmatched = _Unmatched()
    matched = {"spotify": 0, "isrc": 0, "mbid": 0, "exact": 0, "fuzzy": 0}
    next_row = 1

    def chunks() -> Iterator[Chunk]:
        nonlocal next_row
        for plays in READERS[fmt](path):
            chunk = _to_chunk(plays, next_row, source, listener, index, threshold, unmatched, matched, fmt)
            next_row += len(plays.records)
            yield chunk

    # A big export goes in as one bulk load, read and matched ahead while the previous file is written.
    report = ingest_chunks(ctx, source, chunks(), None, progress, _estimate_plays(path, fmt))
    report.elapsed_s = time.perf_counter() - started
    report.notes.append(
        "matched by " + ", ".join(f"{how} {n:,}" for how, n in matched.items() if n) if any(matched.values())
        else "no play matched the catalog"
    )  # fmt: skip
    if unmatched.rows and unmatched_csv is not None:
        n = unmatched.write(Path(unmatched_csv))
        report.notes.append(
            f"{n:,} unmatched track(s) listed in {unmatched_csv}: fill in their catalog columns, "
            "`personalize ingest catalog` it, and import again"
        )
    return report


def _to_chunk(
    plays: Plays,
    first_row: int,
    source: str,
    listener: str | None,
    index: CatalogIndex,
    threshold: float,
    unmatched: _Unmatched,
    matched: dict[str, int],
    fmt: str,
) -> Chunk:
    n = len(plays.records)
    if listener is None and any(not x for x in plays.listener):
        raise IngestFileError(
            f"{source} ({plays.member}): the export does not say whose plays these are; give the listener "
            "id with --listener ID."
        )
    # One listener per export file, usually: normalize each distinct name once.
    names = {x: normal_id(str(x).strip()) for x in set(plays.listener)} if listener is None else {}
    listeners = [listener] * n if listener is not None else [names[x] for x in plays.listener]
    # Match each distinct track once: a history repeats its favourite songs thousands of times.
    raw_keys = list(zip(*(plays.ids[s] for s in SCHEMES), plays.artist, plays.title, strict=True))
    codes, distinct = pd.factorize(pd.Series(raw_keys, dtype=object)) if n else (np.empty(0, np.int64), [])
    # ... and once per import: the files of an export repeat the same songs.
    todo = [k for k in distinct if k not in index.by_raw_key]
    todo_ids = [{s: external_id(s, k[j]) for j, s in enumerate(SCHEMES)} for k in todo]
    new_matches = index.match_all(
        ((d, str(k[-2] or ""), str(k[-1] or "")) for d, k in zip(todo_ids, todo, strict=True)), threshold
    )
    index.by_raw_key.update(zip(todo, zip(todo_ids, new_matches, strict=True), strict=True))
    distinct_ids, matches = [], []
    for k in distinct:
        ids_of, match = index.by_raw_key[k]
        distinct_ids.append(ids_of)
        matches.append(match)
    track_ids = (
        np.array([m.track_id for m in matches], dtype=object)[codes] if n else np.empty(0, dtype=object)
    )
    hows = np.array([m.how for m in matches], dtype=object)[codes] if n else np.empty(0, dtype=object)
    durations_ms = pd.Series(track_ids, dtype=object).map(index.durations_s).to_numpy(dtype=float) * 1000
    ms = plays.ms_played.copy()
    whole = np.isnan(ms) & np.isfinite(durations_ms)  # a scrobble: the track was heard through
    ms[whole] = durations_ms[whole]
    kinds = [k if k is not None else "play" for k in plays.kind]
    row_numbers = np.arange(first_row, first_row + n, dtype=np.int64)
    where = f"{source} ({plays.member})" if plays.member != Path(source).name else source
    quarantined: list[Quarantine] = []
    found = np.array([t is not None for t in track_ids], dtype=bool)
    keep = plays.is_track & found
    for how, count in zip(*np.unique(hows[keep].astype(str), return_counts=True), strict=True):
        matched[str(how)] += int(count)
    for i in np.flatnonzero(~keep):
        if not plays.is_track[i]:
            quarantined.append(
                Quarantine(
                    int(row_numbers[i]), raw_json(plays.records[i]), "not_a_track",
                    f"{where} row {row_numbers[i]}: a podcast episode, audiobook or a play naming no track; "
                    "only music is personalized.",
                )
            )  # fmt: skip
        else:
            unmatched.add(plays.artist[i], plays.title[i], distinct_ids[codes[i]], plays.ts.iat[i], ms[i])
            quarantined.append(
                Quarantine(
                    int(row_numbers[i]), raw_json(plays.records[i]), "unmatched_track",
                    f"{where} row {row_numbers[i]}: {str(plays.artist[i])[:80]!r} - {str(plays.title[i])[:80]!r} "
                    "matches no catalog track; it is in the unmatched CSV: add it to the catalog and import again.",
                )
            )  # fmt: skip
    idx = np.flatnonzero(keep)
    ts = plays.ts.iloc[idx].reset_index(drop=True)
    ms_kept = ms[idx]
    listeners_kept = pd.Series([listeners[i] for i in idx], dtype=object)
    tracks_kept = pd.Series(track_ids[idx], dtype=object)
    stamp_text = pd.Series(ts.to_numpy(dtype="datetime64[us]").astype(np.int64)).astype(str)  # µs since 1970
    basis = (
        listeners_kept.astype(str) + "\x1f" + stamp_text + "\x1f" + tracks_kept.astype(str) + "\x1f"
        + pd.Series(np.nan_to_num(ms_kept, nan=-1).astype(np.int64).astype(str))
    )  # fmt: skip
    hashes = hash_ids(basis.to_numpy(dtype=object)) if len(idx) else np.empty(0, dtype=np.uint64)
    prefix = {"spotify": "sp", "listenbrainz": "lb", "lastfm": "lf"}[fmt]
    frame = pd.DataFrame(
        {
            "event_id": [f"{prefix}-{h:016x}" for h in hashes.tolist()],
            "listener_id": listeners_kept,
            "track_id": tracks_kept,
            "ts": ts,
            "ms_played": pd.Series(ms_kept),
            "kind": pd.Series([kinds[i] for i in idx], dtype=object),
        }
    )
    return Chunk(
        frame=frame,
        row_numbers=row_numbers[idx],
        bad_encoding=np.zeros(len(idx), dtype=bool),
        quarantined=quarantined,
        bytes_done=first_row + n - 1,
    )
