"""Chord progressions learned from the corpus, with cadences where the form asks for them.

:class:`HarmonyModel` counts chord-to-chord moves (one chord per half bar or bar, as
:func:`personalize.music.chords.estimate_chords` reads them) in the corpus's major and minor pieces: the
chorales give real four-part harmony, the tunes an estimated one. A section's progression is drawn from
those counts with its ends fixed: a section that closes (``authentic``) ends V(7) -> I with the tonic on
its last bar; one that stays open (``half``) ends on V; a first section starts on the tonic. The draw
conditions every chord on the fixed ones ahead (backward messages through the chain), so the chords that
lead into a cadence are the ones the corpus uses there, not a cadence glued onto a random walk.

The moves are counted apart by where they land in the bar (into a bar's first span, where harmony
changes most, or into a later one, where it is mostly held), and per style as well as pooled: the chorales'
harmony (a tonic chord on 38 % of held-out downbeats) is not the fiddle tunes' (50 %), and a song of either
style is written with its own (:meth:`HarmonyModel.for_style`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from personalize.generate.song.tokens import counted_by_style
from personalize.music.chords import (
    DIATONIC,
    DOMINANT,
    DOMINANT7,
    TONIC,
    Chord,
    estimate_chords,
    spans_per_bar,
)

MODES = ("major", "minor")
MIN_PHRASE_ENDS = 20  # phrase closes a mode needs before their chords are drawn from


@dataclass
class HarmonyModel:
    """First-order chord transitions per mode over the diatonic chord set (plus the start distribution)."""

    transitions: dict[str, np.ndarray]  # mode -> (n + 1, n): row n is the start of a piece
    pieces: int = 0
    # mode -> (2, n, n): the moves into a bar's first span ([0]) and into its later spans ([1]); empty in a
    # model saved before they were counted apart (every move then reads ``transitions``).
    metric: dict[str, np.ndarray] = field(default_factory=dict)
    styles: dict[str, HarmonyModel] = field(default_factory=dict)
    # mode -> share of each chord under the corpus's phrase ends other than a piece's last (a fermata's
    # chord, in the chorales); empty where none were counted (a model saved before, or the dance tunes).
    phrase_ends: dict[str, np.ndarray] = field(default_factory=dict)

    @staticmethod
    def chords(mode: str) -> tuple[Chord, ...]:
        return DIATONIC[mode]

    def for_style(self, style: str | None) -> HarmonyModel:
        """The harmony of ``style``'s pieces, or the pooled one where that style was not counted."""
        return self.styles.get(style or "", self)

    @classmethod
    def fit(cls, pieces: Iterable[object], smoothing: float = 0.5, per_style: bool = True) -> HarmonyModel:
        """Count transitions in corpus pieces (``parts``, ``bar_ticks``, ``n_bars``, ``meter``,
        ``found_key_pc``, ``found_mode``); a chord held over spans counts as one move to itself each span.
        With ``per_style``, each style's pieces are counted on their own too."""
        pooled, styles = counted_by_style(lambda group: cls._count(group, smoothing), pieces, per_style)
        pooled.styles = styles
        return pooled

    @classmethod
    def _count(cls, pieces: Iterable[object], smoothing: float) -> HarmonyModel:
        counts = {m: np.full((len(DIATONIC[m]) + 1, len(DIATONIC[m])), smoothing) for m in MODES}
        metric = {m: np.full((2, len(DIATONIC[m]), len(DIATONIC[m])), smoothing) for m in MODES}
        ends = {m: np.zeros(len(DIATONIC[m])) for m in MODES}
        n = 0
        for piece in pieces:
            mode = piece.found_mode  # type: ignore[attr-defined]
            spans = spans_per_bar(piece.meter)  # type: ignore[attr-defined]
            seq = estimate_chords(
                piece.parts,  # type: ignore[attr-defined]
                piece.found_key_pc,  # type: ignore[attr-defined]
                mode,
                piece.bar_ticks // spans,  # type: ignore[attr-defined]
                piece.n_bars * spans,  # type: ignore[attr-defined]
            )
            index = {c: i for i, c in enumerate(DIATONIC[mode])}
            ids = [index[c] for c in seq if c in index]
            if len(ids) < 2:
                continue
            counts[mode][-1, ids[0]] += 1
            for a, b in itertools.pairwise(ids):
                counts[mode][a, b] += 1
            for s in range(1, len(seq)):  # the same moves, by where in the bar they land
                if seq[s - 1] in index and seq[s] in index:
                    metric[mode][int(s % spans != 0), index[seq[s - 1]], index[seq[s]]] += 1
            # The chord under each phrase's close: the span that holds its fermata (the phrase's last tick).
            span = piece.bar_ticks // spans  # type: ignore[attr-defined]
            for phrase in getattr(piece, "phrases", [])[:-1]:
                s = (phrase.end_tick - 1) // span
                if "fermata" in phrase.cues and 0 <= s < len(seq) and seq[s] in index:
                    ends[mode][index[seq[s]]] += 1
            n += 1
        probs = {m: c / c.sum(axis=1, keepdims=True) for m, c in counts.items()}
        by_place = {m: c / c.sum(axis=2, keepdims=True) for m, c in metric.items()}
        shares = {m: e / e.sum() for m, e in ends.items() if e.sum() >= MIN_PHRASE_ENDS}
        return cls(probs, n, by_place, phrase_ends=shares)

    def draw_phrase_end(self, mode: str, rng: np.random.Generator) -> Chord | None:
        """A chord for a phrase to close on, drawn as the corpus's phrase ends fall; None where none were
        counted."""
        shares = self.phrase_ends.get(mode)
        if shares is None:
            return None
        return DIATONIC[mode][int(rng.choice(len(shares), p=shares / shares.sum()))]

    def _tables(self) -> dict[str, object]:
        data: dict[str, object] = {
            "pieces": self.pieces,
            "chords": {m: [c.roman(m) for c in DIATONIC[m]] for m in MODES},
            "transitions": {m: np.round(t, 5).tolist() for m, t in self.transitions.items()},
        }
        if self.metric:
            data["metric"] = {m: np.round(t, 5).tolist() for m, t in self.metric.items()}
        if self.phrase_ends:
            data["phrase_ends"] = {m: np.round(t, 5).tolist() for m, t in self.phrase_ends.items()}
        return data

    def save(self, path: Path) -> None:
        data = self._tables()
        if self.styles:
            data["styles"] = {name: model._tables() for name, model in self.styles.items()}
        Path(path).write_text(json.dumps(data, indent=1))

    @classmethod
    def _from_tables(cls, data: dict, path: Path) -> HarmonyModel:  # type: ignore[type-arg]
        trans = {m: np.asarray(t, dtype=float) for m, t in data["transitions"].items()}
        metric = {m: np.asarray(t, dtype=float) for m, t in data.get("metric", {}).items()}
        for m in MODES:
            k = len(DIATONIC[m])
            if trans[m].shape != (k + 1, k) or (metric and metric[m].shape != (2, k, k)):
                raise ValueError(f"{path}: {m} transitions have shape {trans[m].shape}; refit the harmony")
        ends = {m: np.asarray(t, dtype=float) for m, t in data.get("phrase_ends", {}).items()}
        for m, t in ends.items():
            if m not in DIATONIC or t.shape != (len(DIATONIC[m]),):
                raise ValueError(f"{path}: {m} phrase ends have shape {t.shape}; refit the harmony")
        return cls(trans, int(data.get("pieces", 0)), metric, phrase_ends=ends)

    @classmethod
    def load(cls, path: Path) -> HarmonyModel:
        """A saved harmony; one saved before the moves were counted by place and style reads the pooled
        moves everywhere."""
        data = json.loads(Path(path).read_text())
        model = cls._from_tables(data, path)
        model.styles = {name: cls._from_tables(t, path) for name, t in data.get("styles", {}).items()}
        return model

    def progression(
        self,
        mode: str,
        n_bars: int,
        spans: int,
        cadence: str | Chord | None,
        start_on_tonic: bool,
        rng: np.random.Generator,
        temperature: float = 1.0,
        style: str | None = None,
        arrive_late: bool = False,
        after: Chord | None = None,
    ) -> list[list[Chord]]:
        """Chords per bar (``spans`` a bar) for a section of ``n_bars``, ending as ``cadence`` asks
        (``"authentic"``, ``"half"``, a chord of the mode to close on for its whole last bar, or None) and
        starting on the tonic if ``start_on_tonic``; drawn from ``style``'s harmony where it was counted. With ``arrive_late`` (and two spans a bar or more), an
        authentic close reaches the tonic on the last span, after the dominant on the one before. ``after``
        (the chord the music comes from) starts the section as the corpus moves on from it, not as its pieces
        begin (on the tonic half the time: every phrase drawn so heard the tonic on 48 % of its downbeats,
        where the chorales have it on 39 %)."""
        own = self.for_style(style)
        chords = DIATONIC[mode]
        k = len(chords)
        # places[0]: the moves into a bar's first span, places[1]: into a later span.
        places = own.metric[mode] if own.metric else np.stack([own.transitions[mode][:k]] * 2)
        places = places ** (1.0 / temperature)
        places = places / places.sum(axis=2, keepdims=True)
        start = own.transitions[mode][k]
        if after is not None and after in chords:
            start = places[0][chords.index(after)]
        n = n_bars * spans
        allowed = np.ones((n, k), dtype=bool)
        tonic, dom, dom7 = chords.index(TONIC[mode]), chords.index(DOMINANT), chords.index(DOMINANT7)
        if start_on_tonic:
            allowed[0] = False
            allowed[0, tonic] = True
        if cadence == "authentic" and n >= 2 and arrive_late and spans >= 2:
            # The tonic arrives on the last bar's last span, the dominant on its first: a chorale's phrase
            # closes on the third beat, under its fermata, not on the downbeat.
            allowed[n - 1] = False
            allowed[n - 1, tonic] = True
            allowed[n - 2] = False
            allowed[n - 2, [dom, dom7]] = True
        elif cadence == "authentic" and n >= 2:
            for s in range(max(0, n - spans), n):  # the whole last bar rests on the tonic
                allowed[s] = False
                allowed[s, tonic] = True
            pre = max(0, n - spans - 1)
            allowed[pre] = False
            allowed[pre, [dom, dom7]] = True
        elif cadence == "half" and n >= 1:
            allowed[n - 1] = False
            allowed[n - 1, dom] = True
        elif isinstance(cadence, Chord) and cadence in chords and n >= 1:
            for s in range(max(0, n - spans), n):  # the whole last bar holds the chord it closes on
                allowed[s] = False
                allowed[s, chords.index(cadence)] = True

        # Backward messages: beta[s, c] = P(the rest of the constraints hold | chord c at span s).
        def trans(s: int) -> np.ndarray:  # the moves into span s
            return places[int(s % spans != 0)]

        beta = np.ones((n, k))
        beta[-1] = allowed[-1]
        for s in range(n - 2, -1, -1):
            beta[s] = allowed[s] * (trans(s + 1) @ beta[s + 1])
        out: list[Chord] = []
        prev = None
        for s in range(n):
            p = (start if prev is None else trans(s)[prev]) * beta[s]
            if p.sum() <= 0:  # constraints the counts cannot meet: fall back to the allowed chords alone
                p = allowed[s].astype(float)
            prev = int(rng.choice(k, p=p / p.sum()))
            out.append(chords[prev])
        return [out[b * spans : (b + 1) * spans] for b in range(n_bars)]
