"""Which of music21's bundled collections the shipped model may learn from, what their licence texts say, and why.

music21's ``corpus/license.txt`` says the toolkit is BSD-licensed, that the encodings come with the
permission of their encoders where needed, and that "some encodings included in the corpus may not be used
for commercial uses or have other restrictions: please see the licenses embedded in individual compositions
or directories". So each collection below records what its own folder and files say (checked against the
files of music21 10.5), and :func:`file_notice` screens every file of a usable collection for a restrictive
notice before it is parsed: a file that carries one is left out and listed in the manifest with the reason.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

CORPUS_LICENCE = (
    "music21 corpus/license.txt: the BSD-licensed toolkit ships encodings distributed with the permission of "
    "their encoders (and composers or arrangers where needed) and where permitted under US copyright law; "
    "some may not be used commercially or have other restrictions, stated in the individual files or folders."
)


@dataclass(frozen=True)
class Collection:
    """A set of files of music21's corpus and the terms it may be used under.

    ``globs`` are relative to music21's ``corpus`` folder; ``skip`` names files left out on purpose (an older
    duplicate encoding) with the reason; ``licence`` is what the collection's own texts say; ``usable`` is the
    decision for the shipped (commercially deployed) model and ``reason`` explains it.
    """

    name: str
    globs: tuple[str, ...]
    licence: str
    usable: bool
    reason: str
    skip: tuple[tuple[str, str], ...] = ()


COLLECTIONS: dict[str, Collection] = {
    c.name: c
    for c in (
        Collection(
            "bach_chorales",
            ("bach/*.mxl", "bach/*.xml"),
            "J. S. Bach (d. 1750), four-part chorales. The MusicXML files carry no rights or licence statement "
            "(encoded with MuseScore or Finale for music21). The folder's three Humdrum files (bwv277, 281, "
            "366 .krn) say 'Copyright 1994, Center for Computer Assisted Research in the Humanities ... Rights "
            "to all derivative electronic formats reserved. Refer to licensing agreement'.",
            True,
            "Public-domain music; the MusicXML encodings carry no restriction. The CCARH Humdrum files are not "
            "read (the same chorales exist as MusicXML).",
        ),
        Collection(
            "oneills1850",
            ("oneills1850/*.abc",),
            "F. O'Neill, 'The Music of Ireland' (1903): 1,850 tunes in ABC, 'Transcribed by Norbert Paap' (Z: "
            "field). No copyright or licence line in any file.",
            True,
            "Public-domain tunes; the volunteer ABC transcriptions carry no restriction.",
        ),
        Collection(
            "ryans_mammoth",
            ("ryansMammoth/*.abc",),
            "W. B. Ryan, 'Ryan's Mammoth Collection' (Boston, 1883): 1,059 tunes in ABC, each 'Contributed by' a "
            "volunteer (Z: field). No copyright or licence line in any file.",
            True,
            "Public-domain tunes; the volunteer ABC transcriptions carry no restriction.",
        ),
        Collection(
            "monteverdi_madrigals",
            ("monteverdi/*.mxl",),
            "C. Monteverdi (d. 1643), madrigals of Books 3-5 in MusicXML. No rights, encoder or licence "
            "statement in any file. (The Roman-numeral analyses beside them, .rntxt, are not used.)",
            True,
            "Public-domain music; the encodings carry no restriction.",
            (
                (
                    "monteverdi/madrigal.3.1_old.mxl",
                    "an older encoding of madrigal 3.1, which is read instead",
                ),
            ),
        ),
        Collection(
            "trecento",
            ("trecento/*.xml", "trecento/*.mxl"),
            "Fourteenth-century Italian and French polyphony (Jacopo da Bologna, Giovanni da Cascia, Ciconia, "
            "Vitry, anonymous masses) in MusicXML, encoded by music21 contributors; 102 of the 103 file names "
            "cite their source, 'PMFC' (Polyphonic Music of the Fourteenth Century, a critical edition published "
            "1956-1991), and seven credit 'Edition by Leo Schrade'. No licence statement; ten files hold an "
            "empty 'Copyright (c)' field left by Sibelius.",
            True,
            "Public-domain music and encodings without restriction. The edition they follow is no obstacle: a "
            "faithful transcription carries no copyright in the US, and the EU's optional protection of critical "
            "editions lasts at most 30 years from publication (Term Directive, art. 5), so the newest PMFC "
            "volume's lapsed in 2021.",
            (
                (
                    "trecento/PMFC_12_4-Gloria Rvat 1419_bak.xml",
                    "a backup copy of PMFC_12_4-Gloria Rvat 1419.xml",
                ),
                (
                    "trecento/PMFC_13_01-Kyrie-Summe-Clementissime.mxl",
                    "the same Kyrie as PMFC_13_01-Kyrie-Summe-Clementissime.xml, which is read instead",
                ),
            ),
        ),
        Collection(
            "string_quartets",
            (
                "haydn/*/*.mxl",
                "mozart/k80/*.mxl",
                "mozart/k155/*.mxl",
                "mozart/k156/*.mxl",
                "mozart/k458/*.mxl",
                "beethoven/*.mxl",
                "beethoven/*/*.mxl",
            ),
            "String quartets by Haydn (op. 1/1, op. 74/1), Mozart (K. 80, 155, 156, 458) and Beethoven (op. 18, "
            "59, 74, 132, 133) in MusicXML exported from Finale. No rights or licence statement in any file. "
            "(Beethoven op. 18/1 also exists as Humdrum by C. S. Sapp, without a licence line; not read, the "
            "MusicXML is.)",
            True,
            "Public-domain music; the encodings carry no restriction.",
        ),
        Collection(
            "josquin",
            ("josquin/*.abc",),
            "Josquin des Prez, eight pieces in ABC: 'Copyright (C) 1999 Laura E. Conrad ... free; you can "
            "redistribute it and/or modify it under the terms of the GNU General Public License ... version 2 "
            "or later'.",
            False,
            "GPL-2.0-or-later encodings: commercial use is allowed, but a model trained on them may count as a "
            "derived work that must then be distributed under the GPL; eight pieces are not worth that "
            "question for the shipped model (a legal review could turn this on).",
        ),
        Collection(
            "palestrina",
            ("palestrina/*.krn",),
            "G. P. da Palestrina, 1,318 mass movements in Humdrum: 'Copyright 2000, John Miller. This file must "
            "be accompanied by the licensing agreement. Rights to all derivative electronic formats reserved. "
            "Refer to licensing agreement for further details' (the agreement is not shipped with music21).",
            False,
            "Encoder's copyright with derivative formats reserved under a licensing agreement we do not have.",
        ),
        Collection(
            "essen_folksong",
            ("essenFolksong/*.abc",),
            "essenFolksong/license.txt: 'The legal status of the Essen folksong database is unclear ... Prof. "
            "Ewa Dahlig-Turek ... has given permission for non-commercial distribution and use of these files "
            "in music21'.",
            False,
            "Non-commercial permission only.",
        ),
    )
}
USABLE_COLLECTIONS = tuple(name for name, c in COLLECTIONS.items() if c.usable)

# Notices that keep a file out even in a usable collection: the text, and what the manifest says about it.
_NOTICES = (
    (re.compile(r"licen[cs]ing agreement", re.I), "refers to a licensing agreement"),
    (re.compile(r"non-?commercial", re.I), "permission for non-commercial use only"),
    (re.compile(r"all rights reserved|rights to all derivative", re.I), "rights reserved"),
    (re.compile(r"GNU General Public License", re.I), "GPL-licensed encoding"),
    (re.compile(r"creative commons|CC BY", re.I), "Creative Commons licence (terms need checking)"),
    (re.compile(r"Copyright\s*(?:\(c\)|©)?\s*\d{4}", re.I), "carries a dated copyright notice"),
)
_HEAD_CHARS = 20_000  # notices sit in headers (ABC, Humdrum) or the identification block (MusicXML)


def music21_corpus_root() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def source_files(collection: Collection) -> list[Path]:
    """The collection's files, sorted, without those it skips on purpose."""
    root = music21_corpus_root()
    skipped = {s for s, _ in collection.skip}
    files = {p for g in collection.globs for p in root.glob(g)}
    return sorted(p for p in files if p.relative_to(root).as_posix() not in skipped)


def file_notice(path: Path) -> str | None:
    """Why a file must stay out (a restrictive notice in its header), or None when it carries none.

    >>> file_notice(music21_corpus_root() / "bach" / "bwv277.krn")
    'refers to a licensing agreement'
    """
    text = _head_text(path)
    for pattern, reason in _NOTICES:
        if pattern.search(text):
            return reason
    return None


def _head_text(path: Path) -> str:
    if path.suffix == ".mxl":
        with zipfile.ZipFile(path) as z:
            names = [
                n for n in z.namelist() if n.endswith((".xml", ".musicxml")) and not n.startswith("META")
            ]
            return "".join(z.read(n)[:_HEAD_CHARS].decode("utf-8", "replace") for n in names[:1])
    with path.open("rb") as fh:
        return fh.read(_HEAD_CHARS).decode("utf-8", "replace")
