"""The training corpus: music21's bundled scores whose licences allow commercial use, as annotated pieces.

- :mod:`~personalize.corpus.licences` – the collections, what their licence texts say, which are used.
- :mod:`~personalize.corpus.parse` – a score to a :class:`Piece`: repeats expanded, notes in ticks, velocities.
- :mod:`~personalize.corpus.annotate` – sections, phrases with cadences, a chord per harmony slot.
- :mod:`~personalize.corpus.split` – groups (versions of a tune, movements of a work) and their split.
- :mod:`~personalize.corpus.build` – ``build_corpus`` (incremental cache, progress, manifest) and
  ``load_pieces`` (the corpus as built, ``view="v2"``, or the first representation's view, ``view="v1"``).
- :mod:`~personalize.corpus.piece` – :class:`Piece` and ``TICKS_PER_QUARTER``, for the whole project.
"""

from personalize.corpus.build import build_corpus, default_corpus_dir, load_manifest, load_pieces
from personalize.corpus.licences import COLLECTIONS, USABLE_COLLECTIONS, Collection
from personalize.corpus.piece import (
    TICKS_PER_QUARTER,
    V1_TICKS_PER_QUARTER,
    Chord,
    Dynamic,
    Note,
    Phrase,
    Piece,
    Section,
)

__all__ = [
    "COLLECTIONS",
    "TICKS_PER_QUARTER",
    "USABLE_COLLECTIONS",
    "V1_TICKS_PER_QUARTER",
    "Chord",
    "Collection",
    "Dynamic",
    "Note",
    "Phrase",
    "Piece",
    "Section",
    "build_corpus",
    "default_corpus_dir",
    "load_manifest",
    "load_pieces",
]
