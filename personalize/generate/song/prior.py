"""A melody prior counted from the corpus, fused with the Transformer's pitch choices while decoding.

Shallow fusion: when the melody model picks a pitch, its logits get ``weight x log P_prior(pitch)`` added,
where the prior is two small tables counted in the training melodies:

- ``interval``: P(next melodic interval | previous interval), intervals clipped to +-12 semitones (how
  melodies move: mostly steps, a leap usually turns back);
- ``chord_tone``: P(the note is a tone of the chord sounding under it | metric position: downbeat, other
  beat, off the beat) (where melodies meet the harmony);
- ``duration``: P(note length | meter, onset's place in the bar, to the sixteenth) (how a meter's tunes
  move: a reel's running eighths, a waltz's half notes), fused with the model's length choices in the same
  way (``duration_weight``). Pieces in dotted rhythm (a hornpipe's or a strathspey's dotted pairs: at least
  ``DOTTED_SHARE`` of their notes three sixteenths long) are counted apart, under ``"<meter> dotted"``, and
  ``dotted_share`` says how many of a meter's pieces are: a song plan draws its feel with that chance
  (in the corpus's 4/4 tunes three in ten are dotted, and a piece is one or the other throughout; a model
  that mixes the two per note writes neither). Likewise ``sixteenth_share``: of a meter's pieces in even
  rhythm, how many use sixteenths at all, per melody density bin (``"<meter> <bin>"``): four hymn tunes in
  five never do, and a plain piece is written without them.

A fitted **calibration** can ride on top (:mod:`personalize.generate.song.calibrate`): per style, a bias
over the next interval and over the scale degree by metric position, fitted so that the melodies the
model and prior write together have the corpus's interval and degree shares (the two steers each lean
their own way: the model climbs by step and falls by leap where the corpus's tunes do the opposite).

The tables are counted over all training melodies and again per style (``chorale``: the chorales'
soprano lines; ``tune``: the fiddle tunes); a request is steered by its own style's tables
(:meth:`MelodyPrior.for_style`), so a hymn-like song melody moves by step as the chorales do.

Why: the Transformer trained on this machine's CPU learns the chords and the form it is given, but a
small model with a few million training tokens has not yet learned how melodies move from note to note
(teacher-forced, it gives the corpus's stepwise continuations 23 % of its probability, where the corpus
takes them 58 % of the time). The counted prior carries that local knowledge; the model still chooses every
onset, length and bar end, and every pitch together with the prior. ``weight=0`` turns it off; the model
card gives the figures with and without it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from personalize.generate.song.tokens import MAX_BAR_TICKS, TICKS_PER_QUARTER, counted_by_style
from personalize.music.chords import Chord, estimate_chords, spans_per_bar
from personalize.music.controls import density_bin

MAX_INTERVAL = 12
STRENGTHS = ("downbeat", "beat", "offbeat")
MAX_TICKS = MAX_BAR_TICKS  # the longest bar and note the song tokens carry, in sixteenths
# A place in the bar with few notes borrows the meter's lengths overall, as this many notes' worth.
DURATION_BACKOFF = 4.0
DOTTED_SHARE = 0.15  # a piece with this share of dotted-eighth notes is in dotted rhythm
DOTTED = " dotted"  # the key suffix of a meter's dotted-rhythm lengths
MIN_DOTTED_PIECES = 5  # a meter needs this many dotted pieces before its plans may draw that feel
MIN_FEEL_PIECES = 10  # pieces of a meter and density bin needed for their own share of sixteenths


def strength(pos: int, bar_ticks: int, beat_ticks: int) -> int:
    """0 on the downbeat, 1 on another beat, 2 off the beat."""
    if pos == 0:
        return 0
    return 1 if pos % beat_ticks == 0 else 2


def beat_ticks_of(meter: str, ticks_per_quarter: int = 4) -> int:
    num, den = (int(x) for x in meter.split("/"))
    compound = den == 8 and num % 3 == 0 and num > 3
    return 3 * ticks_per_quarter // 2 if compound else 4 * ticks_per_quarter // den


def _clip(interval: int) -> int:
    return int(np.clip(interval, -MAX_INTERVAL, MAX_INTERVAL)) + MAX_INTERVAL


@dataclass
class MelodyPrior:
    interval: np.ndarray  # (25, 25): log P(next interval | previous interval), index = interval + 12
    chord_tone: np.ndarray  # (3, 2): log P(not chord tone, chord tone | strength)
    # meter -> (24, 24): log P(length of d + 1 sixteenths | onset at sixteenth p of the bar), row p, column d
    duration: dict[str, np.ndarray] = field(default_factory=dict)
    dotted_share: dict[str, float] = field(default_factory=dict)  # meter -> share of pieces in dotted rhythm
    # "<meter>" and "<meter> <density bin>" -> share of the pieces in even rhythm with any sixteenth note
    sixteenth_share: dict[str, float] = field(default_factory=dict)
    # "<meter>" -> share of the pieces in even rhythm with sixteenths that also have a dotted eighth or more
    # (a jig's dotted figure now and then: 46 % of the corpus's 6/8 tunes with sixteenths)
    figure_share: dict[str, float] = field(default_factory=dict)
    # The calibration (None until fitted): log-scale biases added to the prior's pitch scores, over the next
    # interval (25, index = interval + 12) and over the degree above the tonic by strength (3, 12).
    interval_bias: np.ndarray | None = None
    degree_bias: np.ndarray | None = None
    # The same two tables counted in each style's melodies alone (a chorale's soprano moves by step seven
    # times in ten, a fiddle tune's under six): a request of that style is steered by its own.
    styles: dict[str, MelodyPrior] = field(default_factory=dict)

    def for_style(self, style: str) -> MelodyPrior:
        """The prior of ``style``'s melodies, or the pooled one where that style was not counted."""
        return self.styles.get(style, self)

    @classmethod
    def fit(cls, pieces: Iterable[object], smoothing: float = 1.0, per_style: bool = True) -> MelodyPrior:
        """Count the top line of corpus pieces (``parts``, ``bar_ticks``, ``n_bars``, ``meter``,
        ``found_key_pc``, ``found_mode``, 4 ticks a quarter) against chords estimated as the tokenizer does;
        with ``per_style``, each style's pieces are counted on their own too."""
        pooled, styles = counted_by_style(lambda group: cls._count(group, smoothing), pieces, per_style)
        pooled.styles = styles
        return pooled

    @classmethod
    def _count(cls, pieces: Iterable[object], smoothing: float) -> MelodyPrior:
        n = 2 * MAX_INTERVAL + 1
        iv = np.full((n, n), smoothing)
        ct = np.full((len(STRENGTHS), 2), smoothing)
        lengths: dict[str, np.ndarray] = {}
        feels: dict[str, list[int]] = {}  # meter -> [pieces, dotted pieces]
        sixteenths: dict[str, list[int]] = {}  # meter, and meter + bin -> [even pieces, with sixteenths]
        figures: dict[str, list[int]] = {}  # meter -> [even pieces with sixteenths, with a dotted eighth]
        for piece in pieces:
            line = sorted(piece.parts[0]) if piece.parts else []  # type: ignore[attr-defined]
            if len(line) < 3:
                continue
            if piece.bar_ticks <= MAX_TICKS:  # type: ignore[attr-defined]
                meter = piece.meter  # type: ignore[attr-defined]
                dotted = float(np.mean([d == 3 for _, d, _ in line])) >= DOTTED_SHARE
                tally = feels.setdefault(meter, [0, 0])
                tally[0] += 1
                tally[1] += dotted
                if not dotted:
                    quarters = piece.n_bars * piece.bar_ticks / TICKS_PER_QUARTER  # type: ignore[attr-defined]
                    has = any(d == 1 for _, d, _ in line)
                    for k in (meter, f"{meter} {density_bin(len(line) / max(quarters, 1e-9))}"):
                        tally16 = sixteenths.setdefault(k, [0, 0])
                        tally16[0] += 1
                        tally16[1] += has
                    if has:
                        tally3 = figures.setdefault(meter, [0, 0])
                        tally3[0] += 1
                        tally3[1] += any(d == 3 for _, d, _ in line)
                key = meter + DOTTED if dotted else meter
                table = lengths.setdefault(key, np.zeros((MAX_TICKS, MAX_TICKS)))
                for onset, dur, _ in line:
                    table[onset % piece.bar_ticks, int(np.clip(dur, 1, MAX_TICKS)) - 1] += 1  # type: ignore[attr-defined]
            spans = spans_per_bar(piece.meter)  # type: ignore[attr-defined]
            span_ticks = piece.bar_ticks // spans  # type: ignore[attr-defined]
            chords = estimate_chords(
                piece.parts,  # type: ignore[attr-defined]
                piece.found_key_pc,  # type: ignore[attr-defined]
                piece.found_mode,  # type: ignore[attr-defined]
                span_ticks,
                piece.n_bars * spans,  # type: ignore[attr-defined]
            )
            beat = beat_ticks_of(piece.meter)  # type: ignore[attr-defined]
            pitches = [p for _, _, p in line]
            for k in range(2, len(pitches)):
                iv[_clip(pitches[k - 1] - pitches[k - 2]), _clip(pitches[k] - pitches[k - 1])] += 1
            for onset, _, pitch in line:
                s = onset // span_ticks
                if s >= len(chords):
                    continue
                tones = chords[s].pitch_classes(piece.found_key_pc)  # type: ignore[attr-defined]
                pos = onset % piece.bar_ticks  # type: ignore[attr-defined]
                ct[strength(pos, piece.bar_ticks, beat), int(pitch % 12 in tones)] += 1  # type: ignore[attr-defined]
        return cls(
            np.log(iv / iv.sum(axis=1, keepdims=True)),
            np.log(ct / ct.sum(axis=1, keepdims=True)),
            {key: _length_table(table, smoothing) for key, table in sorted(lengths.items())},
            {
                meter: round(dotted / n, 4)
                for meter, (n, dotted) in sorted(feels.items())
                if dotted >= MIN_DOTTED_PIECES
            },
            {k: round(has / n, 4) for k, (n, has) in sorted(sixteenths.items()) if n >= MIN_FEEL_PIECES},
            {k: round(has / n, 4) for k, (n, has) in sorted(figures.items()) if n >= MIN_FEEL_PIECES},
        )

    def _tables(self) -> dict[str, object]:
        return {
            "interval": np.round(self.interval, 5).tolist(),
            "chord_tone": np.round(self.chord_tone, 5).tolist(),
            "duration": {m: np.round(t, 4).tolist() for m, t in self.duration.items()},
            "dotted_share": self.dotted_share,
            "sixteenth_share": self.sixteenth_share,
            "figure_share": self.figure_share,
            **(
                {
                    "calibration": {
                        "interval": np.round(self.interval_bias, 4).tolist(),
                        "degree": np.round(self.degree_bias, 4).tolist(),
                    }
                }
                if self.interval_bias is not None and self.degree_bias is not None
                else {}
            ),
        }

    def save(self, path: Path) -> None:
        data = self._tables()
        if self.styles:
            data["styles"] = {name: prior._tables() for name, prior in self.styles.items()}
        Path(path).write_text(json.dumps(data))

    @classmethod
    def load(cls, path: Path) -> MelodyPrior:
        """A saved prior; one saved before the styles were counted apart steers every style alike."""
        data = json.loads(Path(path).read_text())

        def read(t: dict, styles: dict[str, MelodyPrior] | None = None) -> MelodyPrior:
            lengths = {m: np.asarray(v) for m, v in t.get("duration", {}).items()}
            calibration = t.get("calibration") or {}
            return cls(
                np.asarray(t["interval"]),
                np.asarray(t["chord_tone"]),
                duration=lengths,
                dotted_share=t.get("dotted_share", {}),
                sixteenth_share=t.get("sixteenth_share", {}),
                figure_share=t.get("figure_share", {}),
                interval_bias=np.asarray(calibration["interval"]) if calibration else None,
                degree_bias=np.asarray(calibration["degree"]) if calibration else None,
                styles=styles or {},
            )

        return read(data, {name: read(t) for name, t in data.get("styles", {}).items()})

    def duration_log_probs(self, meter: str, pos: int, dotted: bool = False) -> np.ndarray | None:
        """Log-probability of each note length 1..24 sixteenths for a note starting ``pos`` sixteenths into
        a bar of ``meter`` (in dotted rhythm, with ``dotted``), or None where the prior did not count that
        meter (an older file: no steer)."""
        table = self.duration.get(meter + DOTTED) if dotted else None
        if table is None:
            table = self.duration.get(meter)
        return None if table is None or pos >= len(table) else table[pos]

    def draw_dotted(self, meter: str, rng: np.random.Generator) -> bool:
        """Whether a piece in ``meter`` is in dotted rhythm, drawn with the corpus's share of such pieces."""
        share = self.dotted_share.get(meter, 0.0)
        return share > 0 and bool(rng.random() < share)

    def draw_sixteenths(self, meter: str, density: int, rng: np.random.Generator) -> bool:
        """Whether a piece in even rhythm, in ``meter`` and melody density bin ``density``, uses sixteenth
        notes, drawn with the corpus's share of such pieces (the meter's own where the bin had too few pieces);
        True where the prior did not count the meter (an older file: lengths as the model writes them)."""
        share = self.sixteenth_share.get(f"{meter} {density}", self.sixteenth_share.get(meter))
        return share is None or bool(rng.random() < share)

    def draw_figures(self, meter: str, rng: np.random.Generator) -> bool:
        """Whether a piece in even rhythm with sixteenths, in ``meter``, has dotted figures now and then,
        drawn with the corpus's share of such pieces; False where the prior did not count the meter."""
        share = self.figure_share.get(meter)
        return share is not None and bool(rng.random() < share)

    def log_probs(
        self,
        candidates: np.ndarray,
        previous: int | None,
        before: int | None,
        chord: Chord | None,
        metric: int,
    ) -> np.ndarray:
        """Prior log-probability (up to a constant) of each candidate pitch (relative to the tonic), given
        the previous two melody pitches (None at the start) and the chord and metric position of the note."""
        out = np.zeros(len(candidates))
        if previous is not None:
            row = (
                self.interval[_clip(previous - before)] if before is not None else self.interval.mean(axis=0)
            )
            out += row[np.clip(candidates - previous, -MAX_INTERVAL, MAX_INTERVAL) + MAX_INTERVAL]
        if chord is not None:
            tones = np.isin(candidates % 12, chord.pitch_classes(0))
            out += np.where(tones, self.chord_tone[metric, 1], self.chord_tone[metric, 0])
        if self.interval_bias is not None and previous is not None:
            out += self.interval_bias[
                np.clip(candidates - previous, -MAX_INTERVAL, MAX_INTERVAL) + MAX_INTERVAL
            ]
        if self.degree_bias is not None:
            out += self.degree_bias[metric, candidates % 12]
        return out


def _length_table(counts: np.ndarray, smoothing: float) -> np.ndarray:
    """Log P(length | place in the bar) from counts: each place backs off to the meter's lengths overall
    (``DURATION_BACKOFF`` notes' worth), and those to a floor of ``smoothing`` spread over all lengths."""
    overall = counts.sum(axis=0) + smoothing / MAX_TICKS
    overall /= overall.sum()
    table = counts + DURATION_BACKOFF * overall
    return np.log(table / table.sum(axis=1, keepdims=True))
