"""The training corpus: music21's bundled scores turned into cached, quantized parts with key, meter and tempo.

``build_corpus`` parses the chosen collections (two worker processes, incremental: a source file already
cached is skipped) and writes a manifest with every piece's collection, licence note and train/val/test
split. ``load_pieces`` reads the cache back as :class:`Piece` objects, the input of the tokenizer
(:mod:`personalize.generate.tokens`) and of every model trained on the corpus.
"""

from personalize.corpus.build import (
    COLLECTIONS,
    TICKS_PER_QUARTER,
    Collection,
    Piece,
    build_corpus,
    default_corpus_dir,
    load_manifest,
    load_pieces,
)

__all__ = [
    "COLLECTIONS",
    "TICKS_PER_QUARTER",
    "Collection",
    "Piece",
    "build_corpus",
    "default_corpus_dir",
    "load_manifest",
    "load_pieces",
]
