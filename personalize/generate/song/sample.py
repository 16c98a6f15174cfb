"""Write melodies with the song model: every structural token forced, the notes sampled.

Each request is a script: the prefix, then for every written section its ``SEC``/``FINAL`` header and, bar
by bar, ``BAR_i``, the section's chords and the bar's note count ``NOTES_n`` (all forced; the count of a
copied bar is what the copied bar holds; a model trained before the counts existed is given none),
followed either by notes the model writes (it
decides each onset, pitch and length, and when the bar is done by emitting the next bar's token) or by
the notes of a bar written earlier (a varied repeat copies all but its new ending; a second ending
copies the first up to its last eighth or quarter and writes the rest). Rows of a batch run
their own scripts in lock step through one KV cache, so a whole song's melody is one pass.

The decoding rules are what makes a stream well formed (onsets move forward inside the bar, a note ends
by the bar line, pitches stay inside the instrument's range) plus, when ``scale`` is on, pitches inside
the key's scale (harmonic minor for minor keys), no pitch struck three times in a row, no syncopation (a note that starts between beats ends by
the next beat: the corpus's tunes and chorales do not syncopate), and two steers that can be turned off: the corpus's melody
prior fused with the pitch choices (``prior_weight``, :mod:`personalize.generate.song.prior`) and density
guidance on note lengths toward the asked bin (``density_gain``).

A landed phrase end may be a pickup bar (``Material.pickups``): the phrase lands a beat early, held to the
last beat, and one note on that beat leads into the next phrase, as most of the chorales' phrases after
the first begin on an upbeat.

A song longer than the model's context slides it: the prefix and the latest half of the stream are fed
again into a fresh cache (the model was trained on windows that continue a piece the same way).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from personalize.generate.model import MusicTransformer
from personalize.generate.sample import _top_p_filter
from personalize.generate.song import tokens as S
from personalize.generate.song.form import SECOND_ENDING_TAIL_TICKS
from personalize.generate.song.prior import MelodyPrior, beat_ticks_of, strength
from personalize.music.chords import DOMINANT, N_CHORDS, TONIC, Chord

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10, 11)}
MAX_NOTES_PER_BAR = 24
# Density guidance: the centre each bin steers to (notes per quarter; bin edges 0.9, 1.35, 1.8) and the
# gain in logits per octave of density error and octave of note length.
DENSITY_TARGETS = (0.7, 1.12, 1.57, 2.2)
DENSITY_GAIN = 40.0
# A piece with dotted figures (MelodyRequest.figures): the dotted eighth's boost in logits where the
# corpus's even pieces start one at least FIGURE_MIN_PROB of the time, while fewer than FIGURE_SHARE of the
# notes so far are dotted eighths (the corpus's such pieces: a median 3-7 % by meter), at FIGURE_CHANCE of
# those places.
FIGURE_BOOST = 9.0
FIGURE_MIN_PROB = 0.01
FIGURE_SHARE = 0.04
FIGURE_CHANCE = 0.25
# A sung line's last note before a bar whose notes are already written (a repeat, a kept opening): logits lost
# per semitone of the step into that bar's first note beyond a whole step. Written blind, band songs' phrase
# joins leapt a fourth or more 19 % of the time (the chorales' phrase joins: 10 %, inside phrases 7 %).
LEAD_IN_WEIGHT = 1.0
# Logits a sung line's landing note loses for repeating the note before it. A landing must be a chord tone,
# and the note before it often already is one: 29 % of the written chorales' held notes on a phrase's third
# beat repeated the note before (12 % at a penalty of 5). At 3 the melodies' repeated notes came to 15.7 %
# of their intervals, from 16.7 % (the training chorales: 15.0 %).
LANDING_REPEAT_PENALTY = 3.0
PHRASE_BARS = 4  # a phrase lands on its last bar (see MelodyWriter: phrase ends)
# Styles whose note lengths the prior steers: a fiddle tune is dotted or even throughout, and the model left
# to itself mixes the two and writes neither; the chorales' quarters it writes as the corpus does (steering
# them too left band songs' rhythm further from the corpus: duration-histogram AUC 0.78 against 0.70).
LENGTH_STEERED_STYLES = ("tune",)


@dataclass
class Material:
    """One written section: its letter and flags for the model, its chords per bar, the notes asked of
    each bar (``counts``; :mod:`personalize.generate.song.rhythm`), and which bars are copies of another
    material's bars (``copy_from``, and the first ``copy_bars`` bars or the bars ``copy_mask`` marks)."""

    name: str
    letter: str
    chords: list[list[Chord]]
    final: bool = False
    copy_from: str | None = None
    copy_bars: int = 0
    counts: list[int] = field(default_factory=list)
    # Which bars are copies, where not the first ``copy_bars`` (a return that rewrites bars inside it).
    copy_mask: tuple[bool, ...] | None = None
    # Phrase-end bars where the melody may run on instead of landing (a chorale's phrase that flows into
    # the next, as about one phrase end in five of the corpus's does); the song's last bar always lands.
    open_ends: frozenset[int] = frozenset()
    # Bars that repeat a bar written earlier (bar -> (material, bar)): a reel's strain whose second phrase
    # starts as its first did (this same material), or a second strain that closes as the first one's
    # second ending did (another).
    inner: dict[int, tuple[str, int]] = field(default_factory=dict)
    # Bars that repeat a bar written earlier up to its last eighth or quarter and end anew (bar -> (material,
    # bar)): a second ending, a dance tune's or a chorale Stollen's (``form.SECOND_ENDING_TAIL_TICKS``).
    heads: dict[int, tuple[str, int]] = field(default_factory=dict)
    # Landing bars where the phrase lands a beat early and the bar's last beat is a pickup into the next
    # phrase (the chorales' fermata on the third beat, then the upbeat): one note, its pitch the model's.
    pickups: frozenset[int] = frozenset()
    # Of those, the bars whose pickup is two eighths (one in ten of the chorales' upbeats) instead of a quarter.
    eighth_pickups: frozenset[int] = frozenset()

    @property
    def n_bars(self) -> int:
        return len(self.chords)

    def copies(self, bar: int) -> bool:
        """Whether bar ``bar`` repeats the same bar of ``copy_from`` note for note."""
        if self.copy_from is None:
            return False
        if self.copy_mask is not None:
            return bar < len(self.copy_mask) and self.copy_mask[bar]
        return bar < self.copy_bars

    def source(self, bar: int) -> tuple[str, int] | None:
        """The ``(material, bar)`` whose notes bar ``bar`` repeats, or None for a bar written anew."""
        if self.copy_from is not None and self.copies(bar):
            return self.copy_from, bar
        if bar in self.inner:
            return self.inner[bar]
        return None


@dataclass
class MelodyRequest:
    mode: str
    meter: str
    density_bin: int
    style: str  # tune | chorale
    materials: list[Material]
    rel_lo: int  # lowest and highest pitch allowed, relative to 60 + tonic pitch class
    rel_hi: int
    scale: bool = True
    density_target: float | None = None  # notes per quarter to steer to (default: the bin's centre)
    land_phrases: bool = (
        True  # phrase ends land on a held chord tone (songs and chorales; dance tunes run on)
    )
    closing: str | None = None  # the material the song ends with: its last bar lands in every style
    phrase_bars: int = PHRASE_BARS  # a phrase lands on every this many bars of a material (a chorale's: 2)
    dotted: bool = False  # in dotted rhythm (a hornpipe's pairs): the prior's dotted lengths steer
    sixteenths: bool = True  # False: a plain piece, every note a whole number of eighths long
    figures: bool = False  # an even piece with a dotted figure now and then (a dotted eighth and sixteenth)


@dataclass
class _Row:
    request: MelodyRequest
    script: list[object]  # list[int] forced runs, ("free", m, b) and ("copy", m, b) items
    item: int = 0
    offset: int = 0  # tokens of the current forced run already given
    phase: str = "free"  # free | pitch | dur
    tick: int = 0
    pos: int = 0
    notes_in_bar: int = 0
    done: bool = False
    stream: list[int] = field(default_factory=list)
    written: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    bar_chords: list[Chord] = field(default_factory=list)  # the chords of the bar being written
    pitches: list[int] = field(default_factory=list)  # melody pitches so far, relative to the tonic
    notes: int = 0  # notes written so far, and the bars they took: the running density
    dotted: int = 0  # of them, dotted eighths
    bars: int = 0
    asked: int | None = None  # the notes the bar is asked for (its NOTES_<n>; beyond 16, the plan's count)
    planned: int | None = None  # the count of the bar whose NOTES token comes next


def _script(req: MelodyRequest, counts: bool = True) -> list[object]:
    script: list[object] = [S.prefix_tokens(req.mode, req.meter, req.density_bin, req.style)]
    for m, mat in enumerate(req.materials):
        for b, chords in enumerate(mat.chords):
            head = []
            if b == 0:
                head.append(S.section_token(mat.letter))
                if mat.final:
                    head.append(S.FINAL)
            head.append(S.BAR0 + b)
            head += [S.chord_token(c) for c in chords]
            script.append(head)
            source = mat.source(b)
            if counts:
                script.append(("count", m, b))
            if source is None and b in mat.heads:
                script.append(("head", *mat.heads[b], mat.name, b))
            script.append(("copy", *source, mat.name, b) if source else ("free", m, b))
    script.append([S.EOS])
    return script


class MelodyWriter:
    """The song model plus its decoding loop (see the module docstring)."""

    def __init__(
        self,
        model: MusicTransformer,
        temperature: float = 1.0,
        top_p: float = 0.95,
        prior: MelodyPrior | None = None,
        prior_weight: float = 1.0,
        density_gain: float = DENSITY_GAIN,
        duration_weight: float | None = None,
        no_syncopation: bool = True,
        phrase_ends: bool = True,
        exact_counts: bool = True,
        lead_in: float = LEAD_IN_WEIGHT,
    ) -> None:
        self.model = model.eval()
        self.temperature = temperature
        self.top_p = top_p
        self.prior = prior
        self.prior_weight = prior_weight
        # The prior's note lengths are fused as its pitches are (by default with the same weight).
        self.duration_weight = prior_weight if duration_weight is None else duration_weight
        self.density_gain = density_gain
        self.no_syncopation = no_syncopation
        self.phrase_ends = phrase_ends
        self.exact_counts = exact_counts
        self.lead_in = lead_in
        # The model's own vocabulary: one trained before the bar counts ends where they begin.
        self.vocab = v = model.config.vocab_size
        if v not in (S.VOCAB_SIZE, S.NOTES0):
            raise ValueError(f"a song model of {v} tokens: this code reads {S.NOTES0} or {S.VOCAB_SIZE}")
        self.counts = v > S.NOTES0  # the model reads NOTES_<n> at the head of every bar
        self._dur_upto = torch.zeros(S.MAX_BAR_TICKS + 1, v, dtype=torch.bool)
        for r in range(1, S.MAX_BAR_TICKS + 1):
            self._dur_upto[r, S.DUR1 : S.DUR1 + r] = True

    def _pitch_mask(self, req: MelodyRequest) -> torch.Tensor:
        mask = torch.zeros(self.vocab, dtype=torch.bool)
        for rel in range(max(S.REL_LO, req.rel_lo), min(S.REL_HI, req.rel_hi) + 1):
            if req.scale and rel % 12 not in SCALES[req.mode]:
                continue
            mask[S.PITCH0 + rel - S.REL_LO] = True
        if not mask.any():
            raise ValueError(f"no pitch allowed between {req.rel_lo} and {req.rel_hi} relative to the tonic")
        return mask

    @staticmethod
    def _landing_bar(row: _Row) -> bool:
        """Whether the bar being written ends a phrase: the last bar of every phrase of a material, and its
        last bar, unless the plan leaves it open (``Material.open_ends``). There the melody lands: its last
        note starts by the last beat, is a tone of the chord under it and of the chord the bar arrives on
        (of the tonic or the dominant triad where no chords were planned), and lasts to the bar line (the
        corpus's phrases close on a held chord tone, the chorales' under a fermata). The song's last bar
        always lands, whatever the style."""
        item = row.script[row.item]
        if not (isinstance(item, tuple) and item[0] == "free"):
            return False
        material = row.request.materials[item[1]]
        b, n = item[2], material.n_bars
        if material.name == row.request.closing and b == n - 1:
            return True  # every song ends landed, a dance tune too
        if b in material.open_ends:
            return False
        return row.request.land_phrases and ((b + 1) % row.request.phrase_bars == 0 or b == n - 1)

    @staticmethod
    def _landing_tones(row: _Row, pos: int, bar_ticks: int) -> set[int]:
        """Pitch classes (relative to the tonic) a phrase may land on at ``pos``."""
        primary = set(TONIC[row.request.mode].pitch_classes()) | set(DOMINANT.pitch_classes())
        if not row.bar_chords:
            return primary
        spans = len(row.bar_chords)
        chord = row.bar_chords[min(spans - 1, pos * spans // bar_ticks)]
        # Any tone of the chord: at a close on vi, IV or iii the corpus's chorales hold its fifth, third and
        # root about equally often (57, 45 and 34 of their phrase ends on vi).
        # The note is held to the bar line: it belongs to the chord the bar arrives on, too.
        tones, arrival = set(chord.pitch_classes()), set(row.bar_chords[-1].pitch_classes())
        return (tones & arrival) or arrival

    def _resolve(self, row: _Row) -> None:
        """Move past finished runs; turn a copy item into the forced run of the copied bar."""
        while row.item < len(row.script):
            item = row.script[row.item]
            if isinstance(item, list):
                if row.offset < len(item):
                    return
                row.item, row.offset = row.item + 1, 0
                continue
            if item[0] == "copy":
                # The copy is written down as this bar's too, so that a later copy of this bar finds it.
                notes = list(row.written.get((item[1], item[2]), []))
                row.written[(item[3], item[4])] = list(notes)
                row.script[row.item] = notes
                continue
            if item[0] == "head":
                # The copied bar's notes that end by its last eighth or quarter; the rest is written anew.
                upto = S.bar_ticks_of(row.request.meter) - SECOND_ENDING_TAIL_TICKS.get(
                    row.request.meter, S.TICKS_PER_QUARTER
                )
                source = row.written.get((item[1], item[2]), [])
                notes = [
                    tok
                    for k in range(0, len(source) - 2, 3)
                    if source[k] - S.POS0 + source[k + 2] - S.DUR1 + 1 <= upto
                    for tok in source[k : k + 3]
                ]
                row.written[(item[3], item[4])] = list(notes)
                row.script[row.item] = notes
                continue
            if item[0] == "count":
                # The token says "16 or more" past 16; the decoder holds the bar to the planned number.
                row.planned = self._bar_count(row, item[1], item[2])
                row.script[row.item] = [S.notes_token(row.planned)]
                continue
            return
        row.done = True

    @staticmethod
    def _bar_count(row: _Row, m: int, b: int) -> int:
        """The notes bar ``b`` of material ``m`` is asked for: what the copied bar holds when it is a copy,
        else the planned count (a material planned without counts asks for the asked density's share)."""
        mat = row.request.materials[m]
        source = mat.source(b)
        if source is not None:
            return len(row.written.get(source, [])) // 3
        if b < len(mat.counts):
            return mat.counts[b]
        target = row.request.density_target or DENSITY_TARGETS[row.request.density_bin]
        return round(target * S.bar_ticks_of(row.request.meter) / S.TICKS_PER_QUARTER)

    def _still_asked(self, row: _Row, reserve: int = 0) -> int:
        """Notes the bar's count still asks for before the ``reserve`` notes kept for its end (a pickup);
        -1 when it asks for none (no count, or exact counts off)."""
        if not self.exact_counts or row.asked is None:
            return -1
        return max(0, row.asked - row.notes_in_bar - reserve)

    @staticmethod
    def _pickup_bar(row: _Row) -> bool:
        """Whether the bar being written lands a beat early and ends with a pickup (``Material.pickups``;
        never the song's last bar)."""
        item = row.script[row.item]
        if not (isinstance(item, tuple) and item[0] == "free"):
            return False
        material = row.request.materials[item[1]]
        if material.name == row.request.closing and item[2] == material.n_bars - 1:
            return False
        return item[2] in material.pickups

    @staticmethod
    def _pickup_notes(row: _Row) -> int:
        """Notes of the pickup bar's last beat: two eighths (``Material.eighth_pickups``) or one quarter."""
        item = row.script[row.item]
        return 2 if item[2] in row.request.materials[item[1]].eighth_pickups else 1

    @staticmethod
    def _next_pitch(row: _Row) -> int | None:
        """The first pitch (relative to the tonic) of the next bar when its notes are already written (a copy
        of an earlier bar, or the kept head of one), else None."""
        for item in row.script[row.item + 1 :]:
            if isinstance(item, list) or item[0] == "count":
                continue
            if item[0] in ("copy", "head"):
                notes = row.written.get((item[1], item[2]), [])
                return notes[1] - S.PITCH0 + S.REL_LO if len(notes) >= 3 else None
            return None
        return None

    def _next_structural(self, row: _Row) -> int:
        nxt = row.script[row.item + 1]
        assert isinstance(nxt, list) and nxt
        return nxt[0]

    def _feed(self, row: _Row, tok: int) -> None:
        row.stream.append(tok)
        item = row.script[row.item]
        if isinstance(item, list):
            row.offset += 1
        if S.is_bar(tok):
            row.tick, row.phase, row.notes_in_bar, row.asked = 0, "free", 0, None
            row.bar_chords = []
            row.bars += 1
        elif S.is_notes(tok):
            row.asked = row.planned if row.planned is not None else tok - S.NOTES0
            row.planned = None
        elif S.CHORD0 <= tok < S.CHORD0 + N_CHORDS:
            row.bar_chords.append(Chord.from_index(tok - S.CHORD0))
        elif S.is_pos(tok):
            row.pos, row.phase = tok - S.POS0, "pitch"
        elif S.is_pitch(tok):
            row.phase = "dur"
            row.pitches.append(tok - S.PITCH0 + S.REL_LO)
        elif S.is_dur(tok):
            row.tick, row.phase = row.pos + tok - S.DUR1 + 1, "free"
            row.notes_in_bar += 1
            row.notes += 1
            row.dotted += tok == S.DUR1 + 2
        if isinstance(item, tuple) and item[0] == "free":
            if S.is_pos(tok) or S.is_pitch(tok) or S.is_dur(tok):
                mat = row.request.materials[item[1]]
                row.written.setdefault((mat.name, item[2]), []).append(tok)
            else:  # the model ended the bar with the next structural token: continue that forced run
                row.item, row.offset = row.item + 1, 1
        self._resolve(row)

    def _density_bias(self, row: _Row, bar_ticks: int) -> np.ndarray:
        """Logits over durations 1..24 ticks that steer the running density toward the asked bin's centre:
        when the melody so far is sparser than asked, shorter notes gain (and longer ones lose) in
        proportion to the log of the shortfall, clipped to one octave of density either way."""
        error = self._density_error(row, bar_ticks)
        return -self.density_gain * error * np.log2(np.arange(1, S.MAX_BAR_TICKS + 1) / S.TICKS_PER_QUARTER)

    def _density_error(self, row: _Row, bar_ticks: int) -> float:
        """log2(asked / running density), clipped to +-1; positive when the melody so far is too sparse."""
        quarters = (max(row.bars - 1, 0) * bar_ticks + row.tick) / S.TICKS_PER_QUARTER
        target = row.request.density_target or DENSITY_TARGETS[row.request.density_bin]
        # Until two quarters are written, the running figure is mostly the target itself.
        running = (row.notes + 2 * target) / (quarters + 2)
        return float(np.clip(np.log2(target / running), -1.0, 1.0))

    @torch.no_grad()
    def write(self, requests: list[MelodyRequest], seed: int) -> list[list[int]]:
        """The token stream of every request (see :func:`personalize.generate.song.tokens.decode_sections`)."""
        gen = torch.Generator().manual_seed(int(seed))
        coin = np.random.default_rng(int(seed))  # which places a dotted figure is steered to
        rows = [_Row(r, _script(r, self.counts)) for r in requests]
        pitch_masks = [self._pitch_mask(r).numpy() for r in requests]
        dur_upto = self._dur_upto.numpy()
        bar_ticks = [S.bar_ticks_of(r.meter) for r in requests]
        for row in rows:
            self._resolve(row)
        b = len(rows)
        block = self.model.config.block_size
        cache = self.model.new_cache(b)
        last = None
        v = self.vocab
        fed: list[torch.Tensor] = []
        prefix_len = len(S.prefix_tokens("major", "4/4", 0, "tune"))
        # Masks are built in numpy (per-row slicing of a torch tensor costs microseconds a call).
        mask = np.zeros((b, v), dtype=bool)
        forced = np.full(b, -1, dtype=np.int64)
        fusion = np.zeros((b, v), dtype=np.float32)
        use_prior = self.prior is not None and self.prior_weight > 0
        priors = [self.prior.for_style(r.style) if self.prior is not None else None for r in requests]
        use_lengths = self.prior is not None and self.duration_weight > 0
        steer = use_prior or use_lengths or self.density_gain > 0 or self.lead_in > 0
        candidates = np.arange(S.REL_LO, S.REL_HI + 1)
        beats = [beat_ticks_of(r.meter) for r in requests]
        even_lengths = np.zeros(v, dtype=bool)
        even_lengths[S.DUR1 + 1 : S.DUR1 + S.MAX_BAR_TICKS : 2] = True  # 2, 4, 6, ... sixteenths
        while not all(r.done for r in rows):
            mask[:] = False
            forced[:] = -1
            if steer:
                fusion[:] = 0.0
            for i, row in enumerate(rows):
                if row.done:
                    forced[i] = S.PAD
                    continue
                item = row.script[row.item]
                if isinstance(item, list):
                    forced[i] = item[row.offset]
                    continue
                landing = self.phrase_ends and self._landing_bar(row)
                # A pickup bar is a landing bar a beat short (``bt``), then the pickup on its last beat.
                pickup = landing and self._pickup_bar(row)
                bt = bar_ticks[i] - beats[i] if pickup else bar_ticks[i]
                in_pickup = pickup and (row.tick >= bt if row.phase == "free" else row.pos >= bt)
                # A landing note starts by the bar's last beat (a pickup bar's: the beat before the pickup).
                arrive = bt - beats[i]
                upbeat = self._pickup_notes(row) if pickup else 0
                reserve = upbeat if pickup and not in_pickup else 0
                if row.phase == "pitch":
                    mask[i] = pitch_masks[i]
                    last_asked = self._still_asked(row, reserve) == 1  # the bar's last note: where it lands
                    lands_here = False
                    if in_pickup:
                        pass  # the pickup leads into the next phrase: any pitch of the scale
                    elif landing and (row.pos >= arrive or last_asked):
                        lands_here = True
                        tones = self._landing_tones(row, row.pos, bar_ticks[i])
                        keep = np.zeros(v, dtype=bool)
                        keep[S.PITCH0 : S.PITCH0 + len(candidates)] = np.isin(candidates % 12, list(tones))
                        if (mask[i] & keep).any():
                            mask[i] &= keep
                    if len(row.pitches) >= 2 and row.pitches[-1] == row.pitches[-2]:
                        # No third strike of one pitch in a row (runs of repeated notes are rare in the
                        # corpus; a small model falls into them).
                        mask[i, S.PITCH0 + row.pitches[-1] - S.REL_LO] = False
                    if use_prior:
                        spans = max(1, len(row.bar_chords))
                        chord = (
                            row.bar_chords[min(spans - 1, row.pos * spans // bar_ticks[i])]
                            if row.bar_chords
                            else None
                        )
                        prev = row.pitches[-1] if row.pitches else None
                        before = row.pitches[-2] if len(row.pitches) > 1 else None
                        metric = strength(row.pos, bar_ticks[i], beats[i])
                        fusion[i, S.PITCH0 : S.PITCH0 + len(candidates)] = self.prior_weight * priors[
                            i
                        ].log_probs(candidates, prev, before, chord, metric)
                    sung = row.request.land_phrases
                    if sung and self.lead_in > 0 and (in_pickup or (last_asked and not pickup)):
                        # A sung line's bar leads into a bar already written by step where it can (a fiddle
                        # tune leaps back to its strain's start as often as the corpus's: 19 % of joins).
                        nxt = self._next_pitch(row)
                        if nxt is not None:
                            beyond = np.maximum(0, np.abs(candidates - nxt) - 2)
                            fusion[i, S.PITCH0 : S.PITCH0 + len(candidates)] -= self.lead_in * beyond
                    if sung and lands_here and row.pitches and LANDING_REPEAT_PENALTY > 0:
                        fusion[i, S.PITCH0 + row.pitches[-1] - S.REL_LO] -= LANDING_REPEAT_PENALTY
                elif row.phase == "dur" and in_pickup:
                    # The pickup lasts to the bar line; of two eighths, the first lasts half the beat.
                    two = upbeat == 2 and row.pos == bt
                    mask[i, S.DUR1 + (beats[i] // 2 if two else bar_ticks[i] - row.pos) - 1] = True
                elif row.phase == "dur":
                    limit = bt - row.pos
                    if self.no_syncopation and row.pos % beats[i]:
                        # A note that starts between beats ends by the next beat (the corpus's tunes and
                        # chorales do not syncopate; the music gate's metric-feel band is 1-1).
                        limit = min(limit, beats[i] - row.pos % beats[i])
                    mask[i] = dur_upto[limit]
                    if landing:
                        # Land: a note ends by the last beat, or it is a landing tone held to the bar line
                        # (in a pickup bar, to the pickup).
                        to_end = bt - row.pos
                        landed = row.pitches[-1] % 12 in self._landing_tones(row, row.pos, bar_ticks[i])
                        allowed = dur_upto[max(0, min(limit, arrive - row.pos))].copy()
                        if landed and (to_end <= limit or row.pos % beats[i] == 0):
                            if self._still_asked(row, reserve) == 1:
                                allowed[:] = False  # the last note the bar asks for is the held landing
                            allowed[S.DUR1 + to_end - 1] = True
                        if allowed.any():
                            mask[i] = allowed
                    still = self._still_asked(row, reserve) - 1  # notes the bar asks for after this one
                    if still > 0:
                        # Leave a tick for each of them before the bar's last onset.
                        last_onset = arrive if landing else bar_ticks[i] - 1
                        if row.request.sixteenths:
                            most = last_onset - row.pos - still + 1
                        else:  # two ticks each, from an eighth's onset
                            most = last_onset - last_onset % 2 - row.pos - 2 * still + 2
                        room = dur_upto[max(0, min(S.MAX_BAR_TICKS, most))]
                        if (mask[i] & room).any():
                            mask[i] &= room
                    if not row.request.sixteenths and (mask[i] & even_lengths).any():
                        mask[i] &= even_lengths  # a plain piece: eighths and longer
                    if self.density_gain > 0:
                        fusion[i, S.DUR1 : S.DUR1 + S.MAX_BAR_TICKS] = self._density_bias(row, bar_ticks[i])
                    lengths = (
                        priors[i].duration_log_probs(row.request.meter, row.pos, row.request.dotted)
                        if use_lengths and row.request.style in LENGTH_STEERED_STYLES
                        else None
                    )
                    if lengths is not None:
                        fusion[i, S.DUR1 : S.DUR1 + S.MAX_BAR_TICKS] += self.duration_weight * lengths
                        if (
                            row.request.figures
                            and np.exp(lengths[2]) >= FIGURE_MIN_PROB
                            and row.dotted < FIGURE_SHARE * max(1, row.notes)
                            and coin.random() < FIGURE_CHANCE
                        ):
                            # The product with the model sharpens the prior: a length the corpus's even
                            # pieces use now and then (3 % of a jig's beats) would all but never be written.
                            # Steered toward it at some of its places while the piece has fewer than its
                            # share (at every place, the first came on the first note in most pieces).
                            fusion[i, S.DUR1 + 2] += FIGURE_BOOST
                elif in_pickup:
                    # Landed a beat early: the pickup starts on the last beat (two eighths: the second on
                    # its half), then the bar is done.
                    if row.tick == bt or (upbeat == 2 and row.tick == bt + beats[i] // 2):
                        mask[i, S.POS0 + row.tick] = True
                    else:
                        mask[i, self._next_structural(row)] = True
                else:
                    # In a phrase's last bar no note starts after the last beat, and the bar is done only
                    # once a landing note holds to the bar line.
                    last_onset = arrive + 1 if landing and row.tick <= arrive else bar_ticks[i]
                    if row.notes_in_bar < MAX_NOTES_PER_BAR and row.tick < last_onset:
                        mask[i, S.POS0 + row.tick : S.POS0 + last_onset] = True
                    end = self._next_structural(row)
                    if not mask[i].any() or not (landing and row.tick <= arrive):
                        mask[i, end] = True
                    still = self._still_asked(row, reserve)
                    if still == 0 and mask[i, end]:
                        mask[i] = False  # the bar holds the notes it asked for: it ends here
                        mask[i, end] = True
                    elif still > 0 and mask[i, S.POS0 : S.POS0 + bt].any():
                        mask[i, end] = False  # notes still asked for, and room to start them
                        # The next onset leaves a tick for each note after it before the last onset (a
                        # plain piece: an eighth).
                        if row.request.sixteenths:
                            latest = last_onset - still + 1
                        else:
                            latest = (last_onset - 1) - (last_onset - 1) % 2 - 2 * (still - 1) + 1
                        if latest > row.tick:
                            mask[i, S.POS0 + latest : S.POS0 + bar_ticks[i]] = False
                        if landing and still == 1:
                            # The landing note may be held to the bar line only from a beat.
                            on_beat = mask[i, S.POS0 : S.POS0 + bt].copy()
                            on_beat[np.arange(bt) % beats[i] != 0] = False
                            if on_beat.any():
                                mask[i, S.POS0 : S.POS0 + bt] = on_beat
                    if not row.request.sixteenths:
                        # A plain piece starts its notes on eighths only (where that leaves a choice).
                        odd = mask[i, S.POS0 + 1 : S.POS0 + bar_ticks[i] : 2].copy()
                        mask[i, S.POS0 + 1 : S.POS0 + bar_ticks[i] : 2] = False
                        if not mask[i].any():
                            mask[i, S.POS0 + 1 : S.POS0 + bar_ticks[i] : 2] = odd
                    if self.density_gain > 0 and row.tick < bar_ticks[i]:
                        # A rest before the next note, or ending the bar early, thins the melody out.
                        error = self._density_error(row, bar_ticks[i])
                        gaps = np.arange(0, bar_ticks[i] - row.tick) / S.TICKS_PER_QUARTER
                        fusion[i, S.POS0 + row.tick : S.POS0 + bar_ticks[i]] = (
                            -self.density_gain * error * gaps
                        )
                        fusion[i, end] = (
                            -self.density_gain * error * (bar_ticks[i] - row.tick) / S.TICKS_PER_QUARTER
                        )
            forced_t = torch.from_numpy(forced.copy())
            if last is None or bool((forced >= 0).all()):
                tok = forced_t
            else:
                scores = last
                if steer:
                    scores = scores + torch.from_numpy(fusion)
                scores = scores / max(self.temperature, 1e-4)
                scores = scores.masked_fill(~torch.from_numpy(mask), float("-inf"))
                scores[forced_t >= 0] = 0.0  # rows with a forced token: any finite row, replaced below
                scores = _top_p_filter(scores, self.top_p)
                cdf = torch.softmax(scores, dim=-1).cumsum(dim=-1)
                u = torch.rand(b, 1, generator=gen) * cdf[:, -1:]
                sampled = (cdf < u).sum(dim=-1).clamp(max=v - 1)
                tok = torch.where(forced_t >= 0, forced_t, sampled)
            for row, t in zip(rows, tok.tolist(), strict=True):
                if not row.done:
                    self._feed(row, t)
            fed.append(tok)
            if cache.length < block:
                logits, _ = self.model(tok[:, None], cache=cache)
            else:
                # The context is full: keep every row's prefix and the latest half of its stream, and go on
                # from there in a fresh cache (rows advance in lock step, so the lengths agree).
                keep = (block - prefix_len) // 2
                history = torch.stack(fed, dim=1)
                ctx = torch.cat([history[:, :prefix_len], history[:, -keep:]], dim=1)
                cache = self.model.new_cache(b)
                logits, _ = self.model(ctx, cache=cache)
            last = logits[:, -1].float()
        return [row.stream for row in rows]
