"""Token representation: a control prefix, then bars in which every part writes its line in turn.

A sequence reads::

    BOS KEY_<pc*2+minor> TEMPO_<bin> METER_<m> DENSITY_<bin> PROG_<p1> ... PROG_<pn> SEP
    BAR PART_0 (PITCH_x | REST) DUR_d ... PART_1 ... PART_n-1 ...  BAR PART_0 ...  [EOS]

Each part is one monophonic line (every corpus line is: chorale voices and fiddle tunes), so a note needs
just two tokens, pitch then duration in sixteenths, and no position tokens: a line's durations add up to
the bar. Bars interleave the parts (as in MMM), so the parts stay aligned bar by bar and every part the
prefix names is written, which makes the instrument set equal to the request by construction. Parts are
ordered high to low; the prefix's programs follow that order (see :func:`part_order`).

Why our own tokens rather than miditok's REMI/TSD/MMM: with monophonic lines the position and velocity
tokens those carry are redundant, and the grammar above is simple enough to enforce while decoding
(durations that fill each bar exactly; pitches inside each part's instrument range), see
:class:`Grammar`. The vocabulary has 296 tokens.
"""

from __future__ import annotations

import numpy as np
import pretty_midi

from personalize.corpus.piece import V1_TICKS_PER_QUARTER
from personalize.music.controls import (
    METERS,
    N_DENSITY_BINS,
    N_TEMPO_BINS,
    Controls,
    density_bin,
    tempo_bin,
)
from personalize.music.gm import program_range
from personalize.music.keys import parse_meter

PITCH_LO, PITCH_HI = 21, 108  # piano range: every pitch token
MAX_DUR = 24  # sixteenths; the longest bar (12/8, 3/2, 6/4)
MAX_PARTS = 4


def _build_vocab() -> list[str]:
    names = ["PAD", "BOS", "EOS", "SEP", "BAR", "REST"]
    names += [f"PART_{i}" for i in range(MAX_PARTS)]
    names += [f"PITCH_{p}" for p in range(PITCH_LO, PITCH_HI + 1)]
    names += [f"DUR_{d}" for d in range(1, MAX_DUR + 1)]
    names += [f"KEY_{k}" for k in range(24)]
    names += [f"TEMPO_{b}" for b in range(N_TEMPO_BINS)]
    names += [f"METER_{m}" for m in METERS]
    names += [f"DENSITY_{b}" for b in range(N_DENSITY_BINS)]
    names += [f"PROG_{p}" for p in range(128)]
    return names


VOCAB: list[str] = _build_vocab()
TOKEN_ID: dict[str, int] = {name: i for i, name in enumerate(VOCAB)}
VOCAB_SIZE = len(VOCAB)
PAD, BOS, EOS, SEP, BAR, REST = (TOKEN_ID[n] for n in ("PAD", "BOS", "EOS", "SEP", "BAR", "REST"))
PART0 = TOKEN_ID["PART_0"]
PITCH0 = TOKEN_ID[f"PITCH_{PITCH_LO}"]
DUR1 = TOKEN_ID["DUR_1"]


def pitch_token(pitch: int) -> int:
    return PITCH0 + int(pitch) - PITCH_LO


def dur_token(ticks: int) -> int:
    return DUR1 + int(ticks) - 1


def key_token(key_pc: int, mode: str) -> int:
    return TOKEN_ID[f"KEY_{(int(key_pc) % 12) * 2 + (mode == 'minor')}"]


def bar_ticks_of(meter: str) -> int:
    num, den = parse_meter(meter)
    return num * 4 * V1_TICKS_PER_QUARTER // den


def part_order(programs: list[int]) -> list[int]:
    """Indices of ``programs`` from the highest instrument to the lowest (by range midpoint), stable."""
    mids = [sum(program_range(p)) / 2 for p in programs]
    return sorted(range(len(programs)), key=lambda i: -mids[i])


def prefix_tokens(
    key_pc: int, mode: str, tempo_bpm: float, meter: str, density: int, programs_high_to_low: list[int]
) -> list[int]:
    """The control prefix, ending in SEP. ``programs_high_to_low`` must already be in part order."""
    if not 1 <= len(programs_high_to_low) <= MAX_PARTS:
        raise ValueError(
            f"{len(programs_high_to_low)} pitched parts; the representation holds 1 to {MAX_PARTS}"
        )
    out = [
        BOS,
        key_token(key_pc, mode),
        TOKEN_ID[f"TEMPO_{tempo_bin(tempo_bpm)}"],
        TOKEN_ID[f"METER_{meter}"],
    ]
    out.append(TOKEN_ID[f"DENSITY_{density}"])
    out += [TOKEN_ID[f"PROG_{int(p)}"] for p in programs_high_to_low]
    out.append(SEP)
    return out


def controls_prefix(controls: Controls) -> tuple[list[int], list[int]]:
    """Prefix tokens for a request, and the pitched programs in the part order the tokens use."""
    pitched = controls.pitched_programs
    ordered = [pitched[i] for i in part_order(pitched)]
    toks = prefix_tokens(
        controls.key_pc, controls.mode, controls.tempo_bpm, controls.meter, controls.density_bin, ordered
    )
    return toks, ordered


def bars_tokens(
    parts: list[list[tuple[int, int, int]]], bar_ticks: int, first_bar: int, n_bars: int
) -> list[int]:
    """Body tokens for bars ``first_bar .. first_bar+n_bars-1`` of monophonic parts of (onset, dur, pitch).

    A note crossing a bar line is split at it (re-struck in the next bar); silence becomes REST tokens.
    Pitches outside 21..108 are folded by octaves into range.
    """
    out: list[int] = []
    for bar in range(first_bar, first_bar + n_bars):
        bar_start, bar_end = bar * bar_ticks, (bar + 1) * bar_ticks
        out.append(BAR)
        for i, notes in enumerate(parts):
            out.append(PART0 + i)
            t = bar_start
            for onset, dur, pitch in _notes_overlapping(notes, bar_start, bar_end):
                s, e = max(onset, bar_start), min(onset + dur, bar_end)
                if e <= t:
                    continue
                s = max(s, t)
                if s > t:
                    out += [REST, dur_token(s - t)]
                while pitch < PITCH_LO:
                    pitch += 12
                while pitch > PITCH_HI:
                    pitch -= 12
                out += [pitch_token(pitch), dur_token(e - s)]
                t = e
            if t < bar_end:
                out += [REST, dur_token(bar_end - t)]
    return out


def _notes_overlapping(notes: list[tuple[int, int, int]], start: int, end: int) -> list[tuple[int, int, int]]:
    # Notes are sorted by onset; a bisect keeps long pieces linear rather than quadratic.
    import bisect

    i = bisect.bisect_left(notes, (start - MAX_DUR * 8, 0, 0))
    out = []
    for n in notes[i:]:
        if n[0] >= end:
            break
        if n[0] + n[1] > start:
            out.append(n)
    return out


def density_of_parts(
    parts: list[list[tuple[int, int, int]]], bar_ticks: int, first_bar: int, n_bars: int
) -> float:
    """Notes per quarter note per part over the given bars (a note counts in the bar it starts in)."""
    start, end = first_bar * bar_ticks, (first_bar + n_bars) * bar_ticks
    n = sum(1 for notes in parts for onset, _, _ in notes if start <= onset < end)
    quarters = (end - start) / V1_TICKS_PER_QUARTER
    return n / quarters / max(1, len(parts))


def decode_body(
    tokens: list[int] | np.ndarray, n_parts: int, bar_ticks: int
) -> list[list[tuple[int, int, int]]]:
    """Body tokens (after SEP) back to per-part notes (onset tick, duration ticks, pitch), part order kept.

    Tolerant of a sequence cut anywhere: an unfinished note is dropped.
    """
    parts: list[list[tuple[int, int, int]]] = [[] for _ in range(n_parts)]
    bar = -1
    part = 0
    t = 0
    pending: int | None = None  # pitch (or -1 for rest) waiting for its duration
    for tok in (int(x) for x in tokens):
        if tok in (EOS, PAD):
            break
        if tok == BAR:
            bar += 1
            pending = None
        elif PART0 <= tok < PART0 + MAX_PARTS:
            part = tok - PART0
            t = max(bar, 0) * bar_ticks
            pending = None
        elif tok == REST:
            pending = -1
        elif PITCH0 <= tok <= PITCH0 + (PITCH_HI - PITCH_LO):
            pending = tok - PITCH0 + PITCH_LO
        elif DUR1 <= tok < DUR1 + MAX_DUR and pending is not None:
            d = tok - DUR1 + 1
            if pending >= 0 and part < n_parts:
                parts[part].append((t, d, pending))
            t += d
            pending = None
    return parts


def parts_to_midi(
    parts: list[list[tuple[int, int, int]]],
    programs: list[int],
    tempo_bpm: float,
    meter: str,
    velocity: int = 80,
) -> pretty_midi.PrettyMIDI:
    """Per-part notes (in ticks of a sixteenth) to a PrettyMIDI with the tempo and meter written in."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=float(tempo_bpm))
    num, den = parse_meter(meter)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(num, den, 0.0))
    s_per_tick = 60.0 / float(tempo_bpm) / V1_TICKS_PER_QUARTER
    for notes, program in zip(parts, programs, strict=True):
        inst = pretty_midi.Instrument(
            program=int(program), name=pretty_midi.program_to_instrument_name(int(program))
        )
        for onset, dur, pitch in notes:
            inst.notes.append(
                pretty_midi.Note(
                    velocity=velocity,
                    pitch=int(pitch),
                    start=onset * s_per_tick,
                    end=(onset + dur) * s_per_tick - min(0.01, dur * s_per_tick * 0.05),
                )
            )
        pm.instruments.append(inst)
    return pm


def window_density_bin(
    parts: list[list[tuple[int, int, int]]], bar_ticks: int, first_bar: int, n_bars: int
) -> int:
    return density_bin(density_of_parts(parts, bar_ticks, first_bar, n_bars))


# Scale degrees (semitones above the tonic): the major scale; for minor the natural minor plus the raised
# seventh (harmonic minor's leading tone), which minor-key music uses all the time.
_SCALE = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10, 11)}
_TRIAD = {"major": (0, 4, 7), "minor": (0, 3, 7)}
TRIAD_BONUS = 1.0
OUT_OF_SCALE = -2.0


def scale_prior(key_pc: int, mode: str) -> object:
    """Logit offsets over the vocabulary for a key: a bonus on pitches of the tonic triad, a penalty on
    pitches outside the scale, 0 elsewhere (and on every non-pitch token). Scaled by a strength, this is
    the key-guidance decoding rule."""
    import torch

    prior = torch.zeros(VOCAB_SIZE)
    for pitch in range(PITCH_LO, PITCH_HI + 1):
        degree = (pitch - int(key_pc)) % 12
        if degree in _TRIAD[mode]:
            prior[pitch_token(pitch)] = TRIAD_BONUS
        elif degree not in _SCALE[mode]:
            prior[pitch_token(pitch)] = OUT_OF_SCALE
    return prior


class Grammar:
    """Per-row decoding state that says which tokens may come next (a decoding rule, not learned).

    - after SEP, and whenever the last part filled its bar: ``BAR`` (or nothing once ``n_bars`` are done);
    - after ``BAR``, and whenever a part filled its bar: the next ``PART_i``;
    - inside a part: a pitch inside that part's instrument range, or ``REST``; then a duration that does
      not run past the bar line.

    Vectorized over a batch: every method works on tensors of shape (batch,).
    """

    def __init__(
        self,
        programs_high_to_low: list[list[int]],
        bar_ticks: list[int],
        n_bars: list[int],
        density_target: list[float] | None = None,
        density_gain: float = 3.0,
        keys: list[tuple[int, str]] | None = None,
        key_strength: float = 0.0,
    ) -> None:
        import torch

        self.torch = torch
        b = len(programs_high_to_low)
        self.n_parts = torch.tensor([len(p) for p in programs_high_to_low])
        self.bar_ticks = torch.tensor(bar_ticks)
        self.n_bars = torch.tensor(n_bars)
        self.bar = torch.zeros(b, dtype=torch.long)  # bars started
        # part: -2 before the first BAR, -1 right after a BAR, else the part being written.
        self.part = torch.full((b,), -2, dtype=torch.long)
        self.remaining = torch.zeros(b, dtype=torch.long)
        self.want_dur = torch.zeros(b, dtype=torch.bool)
        self.done = torch.zeros(b, dtype=torch.bool)
        # Allowed pitch/REST tokens per row and part: the instrument's range, within the token range.
        self.pitch_mask = torch.zeros(b, MAX_PARTS, VOCAB_SIZE, dtype=torch.bool)
        for r, progs in enumerate(programs_high_to_low):
            for i, p in enumerate(progs):
                lo, hi = program_range(p)
                lo, hi = max(lo, PITCH_LO), min(hi, PITCH_HI)
                self.pitch_mask[r, i, pitch_token(lo) : pitch_token(hi) + 1] = True
                self.pitch_mask[r, i, REST] = True
        dur_len = torch.full((VOCAB_SIZE,), 10_000, dtype=torch.long)
        dur_len[DUR1 : DUR1 + MAX_DUR] = torch.arange(1, MAX_DUR + 1)
        self.dur_len = dur_len
        self.rows = torch.arange(b)
        # Density guidance (see ``bias``): notes started and ticks written so far, summed over parts.
        self.density_target = torch.tensor(density_target, dtype=torch.float32) if density_target else None
        self.density_gain = density_gain
        self.notes = torch.zeros(b)
        self.ticks = torch.zeros(b)
        log_d = torch.zeros(VOCAB_SIZE)
        log_d[DUR1 : DUR1 + MAX_DUR] = torch.log(torch.arange(1, MAX_DUR + 1, dtype=torch.float32) / 4.0)
        self.dur_log_quarters = log_d  # log of each duration token's length in quarters (0 elsewhere)
        self.is_rest = torch.zeros(VOCAB_SIZE)
        self.is_rest[REST] = 1.0
        # Key guidance (see ``bias``): a fixed bonus for the requested key's tonic triad and a penalty for
        # tones outside its scale, scaled by key_strength (0 turns it off).
        self.key_bias = None
        if keys and key_strength > 0:
            self.key_bias = torch.stack([scale_prior(pc, mode) for pc, mode in keys]) * key_strength

    def bias(self) -> object | None:
        """Additive logits that steer each row's running note density toward its requested bin.

        A proportional controller, applied while decoding (not learned): with the running density of
        notes per quarter per part below the target, shorter durations and fewer rests get more weight,
        above it longer ones. ``None`` when no target was given.
        """
        if self.density_target is None:
            return self.key_bias
        torch = self.torch
        prior_q = 4.0  # a few quarters at the target density, so the first notes do not swing it
        quarters = self.ticks / 4.0
        running = (self.notes + self.density_target * prior_q) / (quarters + prior_q)
        gain = (self.density_gain * torch.log(self.density_target / running)).clamp(-3.0, 3.0)
        out = -gain[:, None] * (self.dur_log_quarters[None, :] + self.is_rest[None, :])
        return out if self.key_bias is None else out + self.key_bias

    def allowed(self) -> tuple[object, object]:
        """``(mask (batch, vocab) bool, forced (batch,) long or -1)``: the tokens allowed next per row."""
        torch = self.torch
        b = len(self.rows)
        forced = torch.full((b,), -1, dtype=torch.long)
        need_bar = (self.part == -2) | ((self.remaining == 0) & (self.part == self.n_parts - 1))
        need_part = (self.remaining == 0) & ~need_bar & ~self.want_dur
        forced[need_bar] = BAR
        forced[need_part] = PART0 + self.part[need_part] + 1
        forced[self.done | (need_bar & (self.bar >= self.n_bars))] = PAD
        mask = self.pitch_mask[self.rows, self.part.clamp(min=0)].clone()
        dur_ok = self.dur_len[None, :] <= self.remaining[:, None]
        mask[self.want_dur] = dur_ok[self.want_dur]
        has_forced = forced >= 0
        mask[has_forced] = False
        mask[self.rows[has_forced], forced[has_forced]] = True
        return mask, forced

    def step(self, tokens: object) -> None:
        """Advance every row's state with the token it just emitted."""
        t = tokens
        is_pad = t == PAD
        self.done |= is_pad
        is_bar = t == BAR
        self.bar += is_bar.long()
        self.part[is_bar] = -1
        is_part = (t >= PART0) & (t < PART0 + MAX_PARTS)
        self.part[is_part] = t[is_part] - PART0
        self.remaining[is_part] = self.bar_ticks[is_part]
        is_note = (t == REST) | ((t >= PITCH0) & (t <= PITCH0 + PITCH_HI - PITCH_LO))
        self.want_dur[is_note] = True
        is_dur = (t >= DUR1) & (t < DUR1 + MAX_DUR)
        self.remaining[is_dur] -= t[is_dur] - DUR1 + 1
        self.ticks[is_dur] += (t[is_dur] - DUR1 + 1).float()
        self.notes += ((t >= PITCH0) & (t <= PITCH0 + PITCH_HI - PITCH_LO)).float()
        self.want_dur[is_dur] = False
        self.remaining[is_bar] = 0
