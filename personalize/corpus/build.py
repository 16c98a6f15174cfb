"""Parse music21's bundled corpus into a cached set of quantized pieces, with a manifest and a split by piece.

Cache layout under ``corpus_dir`` (default ``<data_dir>/corpus``)::

    pieces/<collection>/<source file stem>.json   one file per source file (an ABC file holds many tunes)
    failures.json                                 source files or tunes that could not be used, and why
    manifest.json                                 collections with licence notes, every piece with its split

Times are in ticks of a sixteenth note (``TICKS_PER_QUARTER = 4``): coarse enough for a compact token
vocabulary, fine enough for chorales and dance tunes (triplets are snapped to the grid; see ``_part_notes``).
Each part is made monophonic (a chord keeps its top note, or its bottom note in a bass part) because the
token representation writes one line per part.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from personalize.music.measure import find_key

TICKS_PER_QUARTER = 4
CACHE_VERSION = 1
MIN_BARS = 4


@dataclass(frozen=True)
class Collection:
    """One music21 corpus folder and the terms it may be used under."""

    name: str
    folder: str  # sub-folder of music21's corpus
    patterns: tuple[str, ...]
    licence: str
    usable: bool  # may the shipped (commercially deployed) model be trained on it?
    note: str = ""


COLLECTIONS: dict[str, Collection] = {
    c.name: c
    for c in (
        Collection(
            "bach_chorales",
            "bach",
            ("*.mxl", "*.xml"),
            "Public domain compositions (J. S. Bach, d. 1750); MusicXML encodings distributed with music21 "
            "(BSD-licensed toolkit) without further restriction. The three Humdrum (.krn) files carrying a "
            "CCARH licensing-agreement notice are left out.",
            True,
        ),
        Collection(
            "oneills1850",
            "oneills1850",
            ("*.abc",),
            "Public domain tunes (F. O'Neill, 'The Music of Ireland', 1903); ABC transcriptions by volunteers, "
            "freely shared and distributed with music21.",
            True,
        ),
        Collection(
            "ryans_mammoth",
            "ryansMammoth",
            ("*.abc",),
            "Public domain tunes (W. B. Ryan, 'Ryan's Mammoth Collection', 1883); ABC transcriptions "
            "contributed freely and distributed with music21.",
            True,
        ),
        Collection(
            "essen_folksong",
            "essenFolksong",
            ("*.abc",),
            "Essen Folksong Collection: music21's licence note says its legal status is unclear and permission "
            "covers non-commercial distribution and use only.",
            False,
            "Excluded from the shipped model: non-commercial permission only.",
        ),
    )
}
DEFAULT_COLLECTIONS = tuple(name for name, c in COLLECTIONS.items() if c.usable)


@dataclass
class Piece:
    """One piece of the corpus, quantized to sixteenths.

    ``parts`` lists each part's notes as ``(onset_tick, duration_tick, midi_pitch)``, monophonic, ordered
    from the highest part to the lowest, with bar lines at multiples of ``bar_ticks`` (a pickup is shifted
    so that its downbeat lands on the first bar line).
    """

    piece_id: str
    collection: str
    source: str
    title: str
    group: str  # versions of one piece share a group; splits never separate a group
    split: str  # train | val | test
    meter: str
    bar_ticks: int
    n_bars: int
    tempo_bpm: float | None
    key_pc: int
    mode: str
    key_source: str  # "signature" (the encoded key) or "key-finding"
    found_key_pc: int  # Krumhansl-Schmuckler on the notes, for comparison
    found_mode: str
    part_names: list[str] = field(default_factory=list)
    parts: list[list[tuple[int, int, int]]] = field(default_factory=list)


def default_corpus_dir() -> Path:
    from personalize.config import get_settings

    return get_settings().data_dir / "corpus"


def music21_corpus_root() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def source_files(collection: Collection) -> list[Path]:
    folder = music21_corpus_root() / collection.folder
    files: list[Path] = []
    for pattern in collection.patterns:
        files.extend(sorted(folder.glob(pattern)))
    return files


def _group_of(collection: str, source: Path, title: str) -> str:
    """Key that ties versions of one piece together: the BWV number for Bach, the normalized title for tunes."""
    if collection == "bach_chorales":
        m = re.match(r"(bwv\d+)", source.stem.lower())
        return m.group(1) if m else source.stem.lower()
    t = re.sub(r"[^a-z ]", " ", title.lower())
    t = re.sub(r"\b(the|reel|jig|hornpipe|strathspey|clog|fling|slipjig|highland|lancashire|no)\b", " ", t)
    t = re.sub(r"\s+", "", t)
    return t or source.stem.lower()


def _split_of(group: str) -> str:
    # A stable hash of the group, so a rebuild (or a new collection) never moves a piece between splits.
    h = int(hashlib.sha1(group.encode()).hexdigest()[:8], 16) % 100
    return "train" if h < 90 else ("val" if h < 95 else "test")


_MINOR_MODES = {"minor", "aeolian", "dorian", "phrygian", "locrian"}


def _part_notes(part: object, shift_q: float, lowest: bool) -> list[tuple[int, int, int]]:
    """Quantized monophonic notes of one music21 part; grace notes and rests dropped."""
    raw: list[tuple[int, int, int, bool]] = []
    for el in part.flatten().notes:  # type: ignore[attr-defined]
        if el.duration.isGrace or el.quarterLength <= 0:
            continue
        pitches = [p.midi for p in el.pitches]
        if not pitches:
            continue
        pitch = min(pitches) if lowest else max(pitches)
        start = round((float(el.offset) + shift_q) * TICKS_PER_QUARTER)
        end = round((float(el.offset) + shift_q + float(el.quarterLength)) * TICKS_PER_QUARTER)
        tied_in = el.tie is not None and el.tie.type in ("stop", "continue")
        raw.append((start, end, pitch, tied_in))
    raw.sort()
    notes: list[tuple[int, int, int]] = []
    tied_flags: list[bool] = []
    for i, (start, end, pitch, tied_in) in enumerate(raw):
        if i + 1 < len(raw) and raw[i + 1][0] < end:
            # Snapping (triplets) or a chord spread over voices can overlap notes: the next onset wins.
            end = raw[i + 1][0]
        if end <= start:
            continue
        if notes and notes[-1][0] + notes[-1][1] > start:
            continue
        notes.append((start, end - start, pitch))
        tied_flags.append(tied_in)
    # Ties arrive as separate notes of one pitch: join them so a held note stays one note.
    merged: list[tuple[int, int, int]] = []
    for note, tied_in in zip(notes, tied_flags, strict=True):
        prev = merged[-1] if merged else None
        if tied_in and prev is not None and prev[2] == note[2] and prev[0] + prev[1] == note[0]:
            merged[-1] = (prev[0], prev[1] + note[1], prev[2])
        else:
            merged.append(note)
    return merged


def _score_to_piece(score: object, collection: str, source: Path, index: int) -> Piece:
    from music21 import key as m21key
    from music21 import meter as m21meter
    from music21 import tempo as m21tempo

    parts = [p for p in score.parts if p.flatten().notes]  # type: ignore[attr-defined]
    if not parts:
        raise ValueError("no notes")
    if collection == "bach_chorales" and len(parts) != 4:
        raise ValueError(f"{len(parts)} parts (only four-part chorales are used)")
    if len(parts) > 4:
        raise ValueError(f"{len(parts)} parts (at most four are used)")
    sigs = {
        (ts.numerator, ts.denominator) for ts in score.recurse().getElementsByClass(m21meter.TimeSignature)
    }  # type: ignore[attr-defined]
    if len(sigs) != 1:
        raise ValueError(f"{len(sigs)} different time signatures (one is needed)")
    num, den = sigs.pop()
    bar_q = num * 4 / den
    bar_ticks = round(bar_q * TICKS_PER_QUARTER)
    if abs(bar_ticks - bar_q * TICKS_PER_QUARTER) > 1e-6 or not 4 <= bar_ticks <= 24:
        raise ValueError(f"meter {num}/{den} does not fit the sixteenth grid (bar of 4 to 24 sixteenths)")
    measures = list(parts[0].getElementsByClass("Measure"))
    shift_q = 0.0
    if measures:
        first_q = float(measures[0].duration.quarterLength)
        if 0 < first_q < bar_q - 1e-6:
            shift_q = bar_q - first_q  # a pickup: move it so that the first full bar starts on a bar line
    tempo_bpm = None
    marks = list(score.recurse().getElementsByClass(m21tempo.MetronomeMark))  # type: ignore[attr-defined]
    if marks:
        try:
            tempo_bpm = float(marks[0].getQuarterBPM())
        except Exception:
            tempo_bpm = None
    note_parts = [
        _part_notes(p, shift_q, lowest=(i == len(parts) - 1 and len(parts) > 1)) for i, p in enumerate(parts)
    ]
    # Order parts from high to low by mean pitch (the tokenizer's part order).
    order = sorted(
        range(len(parts)), key=lambda i: -np.mean([n[2] for n in note_parts[i]]) if note_parts[i] else 0
    )
    note_parts = [note_parts[i] for i in order]
    names = [str(parts[i].partName or f"part {i + 1}") for i in order]
    end_tick = max(n[0] + n[1] for part in note_parts for n in part)
    n_bars = -(-end_tick // bar_ticks)
    if n_bars < MIN_BARS:
        raise ValueError(f"only {n_bars} bars")

    hist = np.zeros(12)
    for part in note_parts:
        for _, dur, pitch in part:
            hist[pitch % 12] += dur
    found = find_key(hist)
    keys = list(score.recurse().getElementsByClass(m21key.Key))  # type: ignore[attr-defined]
    if keys:
        k = keys[0]
        key_pc, mode = k.tonic.pitchClass, ("minor" if k.mode in _MINOR_MODES else "major")
        key_source = "signature"
    else:
        key_pc, mode, key_source = found.key_pc, found.mode, "key-finding"
    title = str(score.metadata.title or "") if score.metadata else ""  # type: ignore[attr-defined]
    title = title or (source.stem if index == 0 else f"{source.stem} #{index}")
    group = _group_of(collection, source, title)
    return Piece(
        piece_id=f"{collection}/{source.stem}/{index}",
        collection=collection,
        source=f"{COLLECTIONS[collection].folder}/{source.name}",
        title=title,
        group=group,
        split=_split_of(group),
        meter=f"{num}/{den}",
        bar_ticks=bar_ticks,
        n_bars=n_bars,
        tempo_bpm=tempo_bpm,
        key_pc=int(key_pc),
        mode=mode,
        key_source=key_source,
        found_key_pc=found.key_pc,
        found_mode=found.mode,
        part_names=names,
        parts=note_parts,
    )


def _parse_source(job: tuple[str, str, str]) -> tuple[str, str, list[dict], list[dict]]:
    """Worker: parse one source file into pieces; returns (collection, cache path, pieces, failures)."""
    collection, source_str, cache_str = job
    from music21 import converter, stream

    source = Path(source_str)
    pieces: list[dict] = []
    failures: list[dict] = []
    try:
        parsed = converter.parse(source)
    except Exception as exc:
        failures.append({"source": source.name, "collection": collection, "reason": f"unparseable: {exc}"})
        parsed = None
    if parsed is not None:
        scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
        for i, score in enumerate(scores):
            try:
                pieces.append(asdict(_score_to_piece(score, collection, source, i)))
            except Exception as exc:
                failures.append(
                    {"source": f"{source.name} #{i}", "collection": collection, "reason": str(exc)}
                )
    cache = Path(cache_str)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version": CACHE_VERSION, "pieces": pieces, "failures": failures}))
    tmp.replace(cache)
    return collection, cache_str, pieces, failures


def build_corpus(
    corpus_dir: Path | None = None,
    collections: Iterable[str] = DEFAULT_COLLECTIONS,
    workers: int = 2,
    limit_per_collection: int | None = None,
    progress: bool = True,
    parse_missing: bool = True,
) -> dict[str, object]:
    """Parse the collections into ``corpus_dir`` (skipping cached source files) and write the manifest.

    ``parse_missing=False`` only rewrites the manifest from what is already cached (quick).

    Returns a summary: pieces per collection and split, failures, and how many source files were parsed
    now versus found in the cache.
    """
    corpus_dir = Path(corpus_dir) if corpus_dir is not None else default_corpus_dir()
    names = list(collections)
    for name in names:
        if name not in COLLECTIONS:
            raise ValueError(f"unknown collection {name!r}; choose from {', '.join(COLLECTIONS)}")
    jobs: list[tuple[str, str, str]] = []
    cached: list[Path] = []
    for name in names:
        files = source_files(COLLECTIONS[name])
        if limit_per_collection is not None:
            files = files[:limit_per_collection]
        for f in files:
            cache = corpus_dir / "pieces" / name / f"{f.stem}.json"
            if cache.is_file() and _cache_ok(cache):
                cached.append(cache)
            elif parse_missing:
                jobs.append((name, str(f), str(cache)))

    if jobs:
        from rich.progress import Progress

        with Progress(disable=not progress) as bar:
            task = bar.add_task(f"parsing {len(jobs)} source files", total=len(jobs))
            if workers <= 1 or len(jobs) == 1:
                for job in jobs:
                    _parse_source(job)
                    bar.advance(task)
            else:
                with get_context("spawn").Pool(workers) as pool:
                    for _ in pool.imap_unordered(_parse_source, jobs):
                        bar.advance(task)

    used = {(name, f.stem) for name in names for f in _limited(name, limit_per_collection)}
    pieces: list[dict] = []
    failures: list[dict] = []
    for name in names:
        for cache in sorted((corpus_dir / "pieces" / name).glob("*.json")):
            if (name, cache.stem) not in used:
                continue
            data = json.loads(cache.read_text())
            pieces.extend(data["pieces"])
            failures.extend(data["failures"])

    manifest = {
        "version": CACHE_VERSION,
        "ticks_per_quarter": TICKS_PER_QUARTER,
        "collections": {n: asdict(COLLECTIONS[n]) for n in names},
        "pieces": [{k: v for k, v in p.items() if k not in ("parts",)} for p in pieces],
    }
    (corpus_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (corpus_dir / "failures.json").write_text(json.dumps(failures, indent=1))
    summary: dict[str, object] = {
        "corpus_dir": str(corpus_dir),
        "source_files_parsed": len(jobs),
        "source_files_cached": len(cached),
        "pieces": len(pieces),
        "failures": len(failures),
        "by_collection": {n: sum(p["collection"] == n for p in pieces) for n in names},
        "by_split": {s: sum(p["split"] == s for p in pieces) for s in ("train", "val", "test")},
        "key_finding_agrees_with_signature": _agreement(pieces),
    }
    return summary


def _limited(name: str, limit: int | None) -> list[Path]:
    files = source_files(COLLECTIONS[name])
    return files[:limit] if limit is not None else files


def _cache_ok(cache: Path) -> bool:
    try:
        return json.loads(cache.read_text()).get("version") == CACHE_VERSION
    except (OSError, ValueError):
        return False


def _agreement(pieces: list[dict]) -> float | None:
    signed = [p for p in pieces if p["key_source"] == "signature"]
    if not signed:
        return None
    same = sum(p["key_pc"] == p["found_key_pc"] and p["mode"] == p["found_mode"] for p in signed)
    return round(same / len(signed), 4)


def load_manifest(corpus_dir: Path | None = None) -> dict:
    corpus_dir = Path(corpus_dir) if corpus_dir is not None else default_corpus_dir()
    path = corpus_dir / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no corpus at {corpus_dir}: run `personalize corpus build` first")
    return json.loads(path.read_text())


def load_pieces(corpus_dir: Path | None = None, split: str | None = None) -> list[Piece]:
    """Pieces of the built corpus (all, or one split: ``"train"``, ``"val"``, ``"test"``), in manifest order."""
    corpus_dir = Path(corpus_dir) if corpus_dir is not None else default_corpus_dir()
    manifest = load_manifest(corpus_dir)
    listed = {p["piece_id"] for p in manifest["pieces"]}
    out: list[Piece] = []
    for name in manifest["collections"]:
        for cache in sorted((corpus_dir / "pieces" / name).glob("*.json")):
            for p in json.loads(cache.read_text())["pieces"]:
                if p["piece_id"] in listed and (split is None or p["split"] == split):
                    p["parts"] = [[tuple(n) for n in part] for part in p["parts"]]
                    out.append(Piece(**p))
    return out
