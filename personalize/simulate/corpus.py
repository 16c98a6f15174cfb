"""Real music for the demo world: a fixed set of public-domain pieces from music21's bundled corpus, parsed
once by the corpus parser (:mod:`personalize.corpus.parse`) into plain note lists and cached as JSON, so
building a world never waits on music21 twice."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CACHE_VERSION = 2  # 2: parsed by the corpus parser, repeats expanded

# Bach's four-part chorales (public domain, 18th century) and fiddle tunes from Ryan's Mammoth Collection
# (Boston, 1883, public domain). Chorales give four real voices to orchestrate; the tunes give a lively
# melody that the arranger pairs with a bass line. Names are fixed so every machine builds the same world.
CHORALES = (
    "bwv10.7", "bwv101.7", "bwv102.7", "bwv103.6", "bwv104.6", "bwv108.6", "bwv11.6", "bwv110.7",
    "bwv111.6", "bwv112.5", "bwv113.8", "bwv114.7", "bwv115.6", "bwv116.6", "bwv117.4", "bwv119.9",
    "bwv12.7", "bwv120.6", "bwv121.6", "bwv122.6", "bwv123.6", "bwv124.6", "bwv125.6", "bwv126.6",
    "bwv127.5", "bwv13.6", "bwv133.6", "bwv135.6",
)  # fmt: skip
FIDDLE_TUNES = (
    "7thRegimentReel", "AbithaMugginsFavoriteReel", "AcaciaReel", "AcrobatsHornpipe", "AdmiralsHornpipe",
    "AfterTheHareReel", "AlbemarleHornpipe", "AldridgesHornpipe", "AlhambraReel", "ArkansasTravellerReel",
    "BeauxOfOakHillReel", "BlackberryBlossomReel", "BonnieKatesReel", "CuckooHornpipe", "DevilsDreamReel",
    "DurangsHornpipe", "FishersHornpipe", "FlowersOfEdinburgReel", "FlowersOfLimerickReel", "BonnieLadReel",
)  # fmt: skip


@dataclass
class Piece:
    """One parsed piece: voices top to bottom, each as parallel arrays in quarter notes and MIDI pitches."""

    name: str
    collection: str  # "chorale" | "tune"
    meter: str
    length_q: float  # length in quarter notes
    key_pc: int  # as found by the same key-finder that measures the catalog
    mode: str
    parts: list[dict[str, list[float]]]  # each {"pitch": [...], "start_q": [...], "dur_q": [...]}

    def pitch_histogram(self) -> np.ndarray:
        hist = np.zeros(12)
        for part in self.parts:
            np.add.at(hist, np.asarray(part["pitch"], dtype=int) % 12, np.asarray(part["dur_q"]))
        return hist


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/personalize`` (``~/.cache/personalize``): shared by every data dir and test run."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "personalize"


def _find(collection: str, name: str) -> Path:
    from music21 import corpus

    composer = "bach" if collection == "chorale" else "ryansMammoth"
    for path in corpus.getComposer(composer):
        if Path(path).stem == name:
            return Path(path)
    raise FileNotFoundError(
        f"music21 corpus has no {collection} named {name!r}: reinstall music21 (pip install 'music21>=9.1')"
    )


def _parse(collection: str, name: str) -> Piece:
    from personalize.corpus.parse import parse_source
    from personalize.corpus.piece import TICKS_PER_QUARTER

    source = _find(collection, name)
    parsed, problems = parse_source(source, "bach_chorales" if collection == "chorale" else "ryans_mammoth")
    if not parsed:
        reasons = "; ".join(p["reason"] for p in problems) or "no piece in the file"
        raise ValueError(f"corpus {collection} {name!r} ({source}) could not be used: {reasons}")
    score = parsed[0]
    # The piece starts at its first note (the corpus shifts a pickup to end on the first bar line).
    first = min(n.onset for part in score.parts for n in part)
    parts = [
        {
            "pitch": [n.pitch for n in part],
            "start_q": [(n.onset - first) / TICKS_PER_QUARTER for n in part],
            "dur_q": [n.duration / TICKS_PER_QUARTER for n in part],
        }
        for part in score.parts
    ]
    length_q = max(n.onset + n.duration - first for part in score.parts for n in part) / TICKS_PER_QUARTER
    return Piece(name, collection, score.meter, float(length_q), score.found_key_pc, score.found_mode, parts)


def load_pieces(cache_dir: Path | None = None, limit: int | None = None, progress=None) -> list[Piece]:
    """The corpus pieces as note lists, parsing (slow, ~0.5 s each) only those not yet in the cache.

    ``limit`` takes the first pieces of each collection (tests use a few); ``progress`` is called with
    ``(done, total)`` while parsing.
    """
    cache_dir = (cache_dir or default_cache_dir()) / f"corpus-v{CACHE_VERSION}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    wanted = [("chorale", n) for n in CHORALES[:limit]] + [("tune", n) for n in FIDDLE_TUNES[:limit]]
    pieces: list[Piece] = []
    for done, (collection, name) in enumerate(wanted):
        path = cache_dir / f"{collection}-{name}.json"
        if path.is_file():
            pieces.append(Piece(**json.loads(path.read_text())))
        else:
            piece = _parse(collection, name)
            tmp = path.with_suffix(".partial")
            tmp.write_text(json.dumps(piece.__dict__))
            tmp.replace(path)
            pieces.append(piece)
        if progress is not None:
            progress(done + 1, len(wanted))
    return pieces
