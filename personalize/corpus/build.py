"""Build the corpus cache from music21's bundled scores (incremental, with progress) and read it back.

Cache layout under ``corpus_dir`` (default ``<data_dir>/corpus``)::

    pieces/<collection>/<source path, / as __>.json   one file per source file (an ABC book holds many tunes)
    manifest.json     every collection with its licence text and decision, every piece with group and split
    failures.json     files left out for their licence, files or scores that could not be used, repeats
                      that could not be expanded (those pieces are kept as written), a second file of a
                      piece already read; each with the reason

A source file whose cache holds this ``CACHE_VERSION`` and the file's current hash is not parsed again, so
an interrupted build resumes where it stopped and a rebuild after a music21 upgrade parses only what
changed. Groups and splits are decided when the manifest is written, over every cached piece at once
(:mod:`personalize.corpus.split`), so they never need a parse.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

from personalize.corpus.licences import (
    COLLECTIONS,
    CORPUS_LICENCE,
    USABLE_COLLECTIONS,
    file_notice,
    music21_corpus_root,
    source_files,
)
from personalize.corpus.piece import TICKS_PER_QUARTER, Piece
from personalize.corpus.split import assign_groups, group_keys, melody_key, split_of
from personalize.workers import die_with_parent, this_process

CACHE_VERSION = 2
VIEWS = ("v1", "v2")
_WORKER_TASKS = 25  # restart a worker after this many files: music21 keeps caches that only grow


def default_corpus_dir() -> Path:
    from personalize.config import get_settings

    return get_settings().data_dir / "corpus"


def build_corpus(
    corpus_dir: Path | None = None,
    collections: Iterable[str] = USABLE_COLLECTIONS,
    workers: int = 2,
    limit_per_collection: int | None = None,
    progress: bool = True,
    parse_missing: bool = True,
) -> dict[str, object]:
    """Parse the collections into ``corpus_dir`` (skipping files already cached) and write the manifest.

    Parameters
    ----------
    collections
        Names from :data:`~personalize.corpus.licences.COLLECTIONS`; default every usable one.
    workers
        Parser processes (music21 is single-threaded); 1 parses in this process.
    limit_per_collection
        At most this many source files of each collection (quick builds for tests).
    parse_missing
        False only rewrites the manifest from what is already cached.

    Returns
    -------
    A summary: files parsed now and found cached, seconds taken, and per collection the pieces, notes,
    bars, an estimated token count, and failures by kind.
    """
    t0 = time.perf_counter()
    corpus_dir = Path(corpus_dir) if corpus_dir is not None else default_corpus_dir()
    names = list(collections)
    for name in names:
        if name not in COLLECTIONS:
            raise ValueError(f"unknown collection {name!r}; choose from {', '.join(COLLECTIONS)}")
    files = {name: _limited(name, limit_per_collection) for name in names}
    jobs: list[tuple[str, str, str]] = []
    cached = 0
    for name in names:
        for f in files[name]:
            cache = _cache_path(corpus_dir, name, f)
            if _cache_ok(cache, f):
                cached += 1
            elif parse_missing:
                jobs.append((name, str(f), str(cache)))
    if jobs:
        _run_jobs(jobs, workers, progress)

    entries: list[dict] = []
    problems: list[dict] = []
    excluded: dict[str, list[dict]] = {name: [] for name in names}
    for name in names:
        for f in files[name]:
            cache = _cache_path(corpus_dir, name, f)
            if not cache.is_file():
                continue
            data = json.loads(cache.read_text())
            if data.get("excluded"):
                excluded[name].append({"source": data["source"], "reason": data["excluded"]})
                problems.append(
                    {"source": data["source"], "index": -1, "title": "", "stage": "licence",
                     "reason": data["excluded"], "kept": False, "collection": name}
                )  # fmt: skip
            problems += [{**p, "collection": name} for p in data["problems"]]
            entries += data["pieces"]

    seen: set[str] = set()
    unique = []
    for e in entries:
        if e["piece_id"] in seen:  # two encodings of one piece under one name (file.xml and file.mxl)
            problems.append(
                {"source": e["source"], "index": -1, "title": e["title"], "stage": "duplicate",
                 "reason": f"{e['piece_id']} is already read from another file", "kept": False,
                 "collection": e["collection"]}
            )  # fmt: skip
            continue
        seen.add(e["piece_id"])
        unique.append(e)
    entries = unique
    groups = assign_groups((e["piece_id"], e["group_keys"]) for e in entries)
    rows = [_manifest_row(e, groups[e["piece_id"]]) for e in entries]
    manifest = {
        "version": CACHE_VERSION,
        "ticks_per_quarter": TICKS_PER_QUARTER,
        "corpus_licence": CORPUS_LICENCE,
        "collections": {
            n: {
                **asdict(c),
                "built": n in names,
                "files": len(files.get(n, [])),
                "excluded_files": excluded.get(n, []),
            }
            for n, c in COLLECTIONS.items()
        },
        "pieces": rows,
    }
    corpus_dir.mkdir(parents=True, exist_ok=True)
    _write_json(corpus_dir / "manifest.json", manifest, indent=1)
    _write_json(corpus_dir / "failures.json", problems, indent=1)
    return {
        "corpus_dir": str(corpus_dir),
        "source_files_parsed": len(jobs),
        "source_files_cached": cached,
        "seconds": round(time.perf_counter() - t0, 1),
        "pieces": len(rows),
        "notes": sum(r["n_notes"] for r in rows),
        "est_tokens": sum(r["est_tokens"] for r in rows),
        "failures": dict(Counter(p["stage"] for p in problems)),
        "by_split": dict(Counter(r["split"] for r in rows)),
        "groups": len({r["group"] for r in rows}),
        "by_collection": {n: _collection_summary(n, rows, problems) for n in names},
        "key_finding_agrees_with_signature": _agreement(rows),
    }


def load_manifest(corpus_dir: Path | None = None) -> dict:
    corpus_dir = Path(corpus_dir) if corpus_dir is not None else default_corpus_dir()
    path = corpus_dir / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no corpus at {corpus_dir}: run `personalize corpus build` first")
    return json.loads(path.read_text())


def load_pieces(
    corpus_dir: Path | None = None,
    split: str | None = None,
    view: str = "v1",
    collections: Iterable[str] | None = None,
) -> list[Piece]:
    """Pieces of the built corpus, in manifest order, with their group and split.

    Parameters
    ----------
    split
        ``"train"``, ``"val"``, ``"test"`` or None for all.
    view
        ``"v2"``: the corpus as built (polyphonic parts of :class:`~personalize.corpus.piece.Note` at
        ``TICKS_PER_QUARTER``, annotations). ``"v1"``: :meth:`Piece.monophonic` of every piece the first
        representation can hold (see :meth:`Piece.fits_v1`), what the first tokenizer and the models built on
        it read.
    collections
        Only these collections (default: every collection in the manifest).
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    corpus_dir = Path(corpus_dir) if corpus_dir is not None else default_corpus_dir()
    manifest = load_manifest(corpus_dir)
    wanted = set(collections) if collections is not None else None
    rows = {
        r["piece_id"]: r
        for r in manifest["pieces"]
        if (split is None or r["split"] == split) and (wanted is None or r["collection"] in wanted)
    }
    sources = sorted({(r["collection"], r["source"]) for r in rows.values()})
    by_id: dict[str, Piece] = {}
    root = music21_corpus_root()
    for collection, source in sources:
        data = json.loads(_cache_path(corpus_dir, collection, root / source).read_text())
        for entry in data["pieces"]:
            row = rows.get(entry["piece_id"])
            if row is None:
                continue
            piece = Piece.from_json(entry)
            piece.group, piece.split = row["group"], row["split"]
            if view == "v1":
                if not piece.fits_v1():
                    continue
                piece = piece.monophonic()
            by_id[piece.piece_id] = piece
    return [by_id[pid] for pid in rows if pid in by_id]


def _run_jobs(jobs: list[tuple[str, str, str]], workers: int, progress: bool) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    # Largest files first, so the last minutes are not one long quartet movement on one worker.
    jobs = sorted(jobs, key=lambda j: -Path(j[1]).stat().st_size)
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[pieces]} pieces"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"parsing {len(jobs)} source files", total=len(jobs), pieces=0)
        pieces = 0
        if workers <= 1 or len(jobs) == 1:
            results = map(_parse_job, jobs)
            for n in results:
                pieces += n
                bar.update(task, advance=1, pieces=pieces)
        else:
            pool = get_context("spawn").Pool(
                workers, die_with_parent, (this_process(), False), maxtasksperchild=_WORKER_TASKS
            )
            try:
                for n in pool.imap_unordered(_parse_job, jobs):
                    pieces += n
                    bar.update(task, advance=1, pieces=pieces)
                # Let the workers finish and go: the pool's context manager terminates them instead, and
                # terminating a pool whose workers were recycled (maxtasksperchild) could wait forever on
                # its task queue's lock once every file was parsed.
                pool.close()
            except BaseException:
                pool.terminate()
                raise
            finally:
                pool.join()


def _parse_job(job: tuple[str, str, str]) -> int:
    """Worker: parse one source file (unless its licence notice keeps it out) and write its cache."""
    from personalize.corpus.parse import parse_source

    collection, source_str, cache_str = job
    source = Path(source_str)
    rel = source.relative_to(music21_corpus_root()).as_posix()
    notice = file_notice(source)
    entries: list[dict] = []
    problems: list[dict] = []
    if notice is None:
        pieces, problems = parse_source(source, collection)
        for p in pieces:
            keys = group_keys(collection, rel, p.piece_id, p.title, melody_key(p.parts[0]))
            entries.append({**p.to_json(), "group_keys": keys})
    data = {
        "version": CACHE_VERSION,
        "source": rel,
        "source_sha1": _sha1(source),
        "excluded": notice,
        "pieces": entries,
        "problems": problems,
    }
    _write_json(Path(cache_str), data)
    return len(entries)


def _manifest_row(entry: dict, group: str) -> dict:
    n_notes = sum(len(p) for p in entry["parts"])
    slots_per_bar = entry["bar_ticks"] // max(1, entry["chord_ticks"])
    return {
        "piece_id": entry["piece_id"],
        "collection": entry["collection"],
        "source": entry["source"],
        "title": entry["title"],
        "group": group,
        "split": split_of(group),
        "meter": entry["meter"],
        "bar_ticks": entry["bar_ticks"],
        "n_bars": entry["n_bars"],
        "n_parts": len(entry["parts"]),
        "n_notes": n_notes,
        # A rough size in tokens of an encoding that writes per bar a bar token, a part token per part and a
        # chord per harmony slot, and per note a position, a pitch and a duration.
        "est_tokens": entry["n_bars"] * (1 + len(entry["parts"]) + slots_per_bar) + 3 * n_notes,
        "key_pc": entry["key_pc"],
        "mode": entry["mode"],
        "key_source": entry["key_source"],
        "found_key_pc": entry["found_key_pc"],
        "found_mode": entry["found_mode"],
        "tempo_bpm": entry["tempo_bpm"],
        "repeats": entry["repeats"],
        "irregular_bars": entry["irregular_bars"],
        "dynamics_marked": entry["dynamics_marked"],
        "chord_source": entry["chord_source"],
        "sections": "".join(s[2] for s in entry["sections"]),
        "phrases": len(entry["phrases"]),
    }


def _collection_summary(name: str, rows: list[dict], problems: list[dict]) -> dict:
    mine = [r for r in rows if r["collection"] == name]
    return {
        "pieces": len(mine),
        "notes": sum(r["n_notes"] for r in mine),
        "bars": sum(r["n_bars"] for r in mine),
        "est_tokens": sum(r["est_tokens"] for r in mine),
        "repeats_expanded": sum(r["repeats"] == "expanded" for r in mine),
        "with_dynamics": sum(r["dynamics_marked"] for r in mine),
        "with_irregular_bars": sum(r["irregular_bars"] > 0 for r in mine),
        "failures": dict(Counter(p["stage"] for p in problems if p["collection"] == name)),
    }


def _limited(name: str, limit: int | None) -> list[Path]:
    files = source_files(COLLECTIONS[name])
    return files[:limit] if limit is not None else files


def _cache_path(corpus_dir: Path, collection: str, source: Path) -> Path:
    rel = source.relative_to(music21_corpus_root()).as_posix()
    return corpus_dir / "pieces" / collection / (rel.replace("/", "__") + ".json")


def _cache_ok(cache: Path, source: Path) -> bool:
    if not cache.is_file():
        return False
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return False
    return data.get("version") == CACHE_VERSION and data.get("source_sha1") == _sha1(source)


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _write_json(path: Path, data: object, indent: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=indent, ensure_ascii=False))
    tmp.replace(path)


def _agreement(rows: list[dict]) -> float | None:
    signed = [r for r in rows if r["key_source"] == "signature"]
    if not signed:
        return None
    same = sum(r["key_pc"] == r["found_key_pc"] and r["mode"] == r["found_mode"] for r in signed)
    return round(same / len(signed), 4)
