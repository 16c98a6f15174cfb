"""Train/val/test split by group: versions of one tune, or movements of one work, always land on one side.

A piece gets keys that tie it to others (:func:`group_keys`): its work (a BWV number, a quartet's opus, a
madrigal), its title for tunes (normalized, so "The Kesh Jig" meets "Kesh"), and the opening of its top
line as intervals (so one chorale melody harmonized twice, or one tune printed under two names in two
books, meet too). Pieces sharing any key form one group (union-find over the keys), and the group's split
comes from a hash of its smallest key: the same corpus always splits the same way, and adding a collection
moves a piece only if it joins that piece's group to another.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable

from personalize.corpus.piece import Note

SPLIT_SHARES = (("train", 90), ("val", 5), ("test", 5))  # percent
TUNE_COLLECTIONS = {"oneills1850", "ryans_mammoth", "essen_folksong"}
MELODY_INTERVALS = 16  # opening intervals of the top line (repeated pitches skipped) that identify a melody
MIN_TITLE_CHARS = 4  # shorter normalized titles ("reel") say nothing about which tune it is

_TUNE_WORDS = r"\b(the|a|reel|jig|hornpipe|strathspey|clog|fling|slip|slipjig|highland|lancashire|no|air|march|set|dance|polka|waltz|song|of)\b"


def work_key(collection: str, source: str, piece_id: str) -> str:
    """The work a piece belongs to; ``source`` is its path inside music21's corpus.

    >>> work_key("bach_chorales", "bach/bwv248.12-2.mxl", "x")
    'bach_chorales:bwv248'
    >>> work_key("string_quartets", "beethoven/opus59no1/movement2.mxl", "x")
    'string_quartets:beethoven/opus59no1'
    >>> work_key("trecento", "trecento/PMFC_06-Jacopo-03b-Di_Novo.xml", "x")
    'trecento:PMFC_06'
    """
    path = source.rsplit(".", 1)[0]
    stem = path.rsplit("/", 1)[-1]
    if collection == "bach_chorales":
        m = re.match(r"(bwv\d+)", stem.lower())
        key = m.group(1) if m else stem.lower()
    elif collection == "string_quartets":
        key = path if "/" not in path.split("/", 1)[1] else path.rsplit("/", 1)[0]
    elif collection == "monteverdi_madrigals":
        key = stem.removesuffix("_old")
    elif collection == "trecento":
        key = re.sub(r"(\d+)[a-z]$", r"\1", re.split(r"[- ]", stem)[0]).removesuffix("_bak")
    else:
        key = piece_id  # a tune's work is itself; titles and melodies tie its versions together
    return f"{collection}:{key}"


def title_key(title: str) -> str | None:
    """A tune title reduced to what names the tune, or None when too little is left.

    >>> title_key("The Kesh Jig") == title_key("KESH -- JIG") == "kesh"
    True
    """
    t = re.sub(r"[^a-z ]", " ", title.lower().replace("'", ""))
    t = re.sub(_TUNE_WORDS, " ", t)
    t = re.sub(r"\s+", "", t)
    return t if len(t) >= MIN_TITLE_CHARS else None


def melody_key(top_part: list[Note]) -> str | None:
    """The opening intervals of a top line (its highest note at each onset), or None for a short line."""
    highest: dict[int, int] = {}
    for n in top_part:
        highest[n.onset] = max(highest.get(n.onset, 0), n.pitch)
    pitches = [highest[t] for t in sorted(highest)]
    steps = [b - a for a, b in itertools.pairwise(pitches) if b != a]
    if len(steps) < MELODY_INTERVALS:
        return None
    return ",".join(str(s) for s in steps[:MELODY_INTERVALS])


def group_keys(collection: str, source: str, piece_id: str, title: str, melody: str | None) -> list[str]:
    keys = [f"work:{work_key(collection, source, piece_id)}"]
    if collection in TUNE_COLLECTIONS and (t := title_key(title)):
        keys.append(f"title:{t}")
    if melody:
        keys.append(f"melody:{melody}")
    return keys


def assign_groups(pieces: Iterable[tuple[str, list[str]]]) -> dict[str, str]:
    """{piece_id: group} from (piece_id, keys): pieces sharing a key, directly or through others, share a group.

    >>> assign_groups([("a", ["work:1", "title:x"]), ("b", ["work:2", "title:x"]), ("c", ["work:3"])])
    {'a': 'title:x', 'b': 'title:x', 'c': 'work:3'}
    """
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        parent.setdefault(k, k)
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    items = list(pieces)
    for _, keys in items:
        roots = sorted({find(k) for k in keys})
        for r in roots[1:]:
            parent[r] = roots[0]  # the smallest key represents the group, whatever order pieces come in
    return {pid: find(keys[0]) for pid, keys in items}


def split_of(group: str) -> str:
    """train, val or test from a stable hash of the group (90/5/5)."""
    h = int(hashlib.sha1(group.encode()).hexdigest()[:8], 16) % 100
    for name, share in SPLIT_SHARES:
        if h < share:
            return name
        h -= share
    return SPLIT_SHARES[-1][0]
