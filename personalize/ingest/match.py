"""Plays exported from another service matched to catalog tracks: by an external id first (Spotify track id,
ISRC, MusicBrainz recording id), else by normalized artist and title, exactly or within a fuzzy threshold
(rapidfuzz's normalized Indel similarity, 0..100)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select

from personalize.context import Context
from personalize.db.models import Track, TrackExternalId

SCHEMES = ("spotify", "isrc", "mbid")
# "Beatles - Let It Be (Remastered)" and "The Beatles - Let It Be" score 100 once normalized; a typo in a
# name of twenty letters costs 2 to 3.
DEFAULT_THRESHOLD = 90.0
_SPOTIFY_TRACK = re.compile(
    r"(?:spotify:track:|open\.spotify\.com/(?:intl-[a-z-]+/)?track/)([0-9A-Za-z]{22})\b"
)
_SPOTIFY_BARE = re.compile(r"[0-9A-Za-z]{22}")
_MBID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Decorations that differ between services for the same recording: "(feat. X)", "- 2011 Remaster", "[Live]".
_DECORATION = re.compile(
    r"\s*[\(\[][^\)\]]*\b(?:feat|ft|with|remaster(?:ed)?|live|mono|stereo|version|edit|mix)\b[^\)\]]*[\)\]]"
    r"|\s+-\s+.*\b(?:remaster(?:ed)?|live|mono|stereo|version|edit|mix)\b.*$",
    re.IGNORECASE,
)


def external_id(scheme: str, value: object) -> str | None:
    """The stored form of an external id, or None when ``value`` is not one: a Spotify track URI, URL or
    bare id becomes the 22-character id; an ISRC loses dashes and is upper case; an MBID is lower case."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    if not text:
        return None
    if scheme == "spotify":  # a track's URI, URL or bare id; an album's or episode's is not a track
        found = _SPOTIFY_TRACK.search(text)
        if found:
            return found.group(1)
        return text if _SPOTIFY_BARE.fullmatch(text) else None
    if scheme == "isrc":
        isrc = re.sub(r"[\s-]", "", text).upper()
        return isrc if re.fullmatch(r"[A-Z]{2}[A-Z0-9]{3}\d{7}", isrc) else None
    if scheme == "mbid":
        found = _MBID.search(text.lower())
        return found.group(0) if found else None
    raise ValueError(f"unknown external id scheme {scheme!r}; use one of {', '.join(SCHEMES)}")


def normalize_name(text: object) -> str:
    """Artist or title as compared: decorations dropped, accents and case folded, punctuation to spaces, a
    leading "the" dropped (``"The Beatles"`` and ``"Beatles"`` match)."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    value = _DECORATION.sub("", str(text))
    value = unicodedata.normalize("NFKD", value)
    value = "".join(ch for ch in value if not unicodedata.combining(ch)).casefold().replace("&", " and ")
    value = re.sub(r"[\W_]+", " ", value).strip()
    return value.removeprefix("the ")


@dataclass
class Match:
    track_id: str | None
    how: str  # spotify | isrc | mbid | exact | fuzzy | none
    score: float = 0.0


@dataclass
class CatalogIndex:
    """The catalog as the matcher needs it, loaded once per import."""

    by_scheme: dict[str, dict[str, str]] = field(default_factory=dict)
    by_name: dict[str, str] = field(default_factory=dict)  # "artist\ttitle" normalized -> track_id
    names: list[str] = field(default_factory=list)
    name_ids: list[str] = field(default_factory=list)
    durations_s: dict[str, float] = field(default_factory=dict)
    # Names already matched in this import (an export's files repeat the same songs): name -> Match
    seen: dict[str, Match] = field(default_factory=dict)
    normalized: dict[tuple[str, str], str] = field(default_factory=dict)  # (artist, title) -> name
    # An export's (ids, artist, title) as exported -> (the ids normalized, its Match), for the importer
    by_raw_key: dict[tuple, tuple[dict[str, str | None], Match]] = field(default_factory=dict)

    @classmethod
    def load(cls, ctx: Context) -> CatalogIndex:
        index = cls(by_scheme={s: {} for s in SCHEMES})
        with ctx.engine.connect() as conn:
            for scheme, value, track_id in conn.execute(
                select(TrackExternalId.scheme, TrackExternalId.value, TrackExternalId.track_id)
            ):
                index.by_scheme.setdefault(scheme, {})[value] = track_id
            rows = conn.execute(
                select(Track.track_id, Track.artist, Track.title, Track.duration_s).where(
                    Track.source == "catalog"
                )
            )
            for track_id, artist, title, duration_s in rows:
                index.durations_s[track_id] = float(duration_s)
                if not artist:
                    continue
                key = f"{normalize_name(artist)}\t{normalize_name(title)}"
                if key not in index.by_name:
                    index.by_name[key] = track_id
                    index.names.append(key)
                    index.name_ids.append(track_id)
        return index

    def match_all(
        self,
        keys: Iterable[tuple[dict[str, str | None], str, str]],
        threshold: float = DEFAULT_THRESHOLD,
    ) -> list[Match]:
        """One :class:`Match` per ``(external ids, artist, title)``; the fuzzy step runs once per distinct
        name over the whole catalog (rapidfuzz's ``cdist`` on both cores), so a million plays of twenty
        thousand songs cost twenty thousand comparisons rows, not a million."""
        from rapidfuzz import fuzz, process

        keys = list(keys)
        out: list[Match | None] = [None] * len(keys)
        pending: dict[str, list[int]] = {}
        for i, (ids, artist, title) in enumerate(keys):
            for scheme in SCHEMES:
                value = ids.get(scheme)
                if value and value in self.by_scheme.get(scheme, {}):
                    out[i] = Match(self.by_scheme[scheme][value], scheme, 100.0)
                    break
            else:
                name = self.normalized.get((artist, title))
                if name is None:
                    name = self.normalized[(artist, title)] = (
                        f"{normalize_name(artist)}\t{normalize_name(title)}"
                    )
                if name in self.seen:
                    out[i] = self.seen[name]
                elif name in self.by_name:
                    out[i] = Match(self.by_name[name], "exact", 100.0)
                elif name.strip() and self.names:
                    pending.setdefault(name, []).append(i)
                else:
                    out[i] = Match(None, "none")
        queries = list(pending)
        for start in range(0, len(queries), 2000):
            part = queries[start : start + 2000]
            scores = process.cdist(
                part, self.names, scorer=fuzz.ratio, score_cutoff=threshold, dtype=np.uint8, workers=-1
            )
            best = scores.argmax(axis=1)
            for q, name in enumerate(part):
                score = float(scores[q, best[q]])
                match = (
                    Match(self.name_ids[best[q]], "fuzzy", score)
                    if score >= threshold
                    else Match(None, "none", score)
                )
                self.seen[name] = match
                for i in pending[name]:
                    out[i] = match
        return [m if m is not None else Match(None, "none") for m in out]
