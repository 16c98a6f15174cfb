"""Two noise baselines the music evaluation writes itself: random notes in the scale, and a first-order
Markov chain trained on the corpus.

Both implement the generator contract (``generate(controls, seed) -> list[PrettyMIDI]``, one file per
request, parts in the order of ``controls.programs``, a drum part where asked), so they are measured exactly
as the shipped model is. Each pitched part gets a *role* (tune melody, or a chorale voice: soprano, alto,
tenor, bass) from the request's texture and its position: the Markov chain learns one chain per role and
the random baseline draws inside the role's register.

- :class:`RandomInScale`: pitches uniform over the key's scale inside the role's register, durations drawn
  from 1-8 sixteenths tilted so that the mean matches the requested density bin.
- :class:`MarkovChain`: states are ``(pitch relative to the tonic, duration in sixteenths)``, transitions
  counted on the corpus train split per role, mode and meter kind (simple or compound), falling back to the
  role alone where that cell is thin. Each part is sampled on its own; the chain knows the previous note
  and nothing else (no bars, no other parts, no form).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pretty_midi

from personalize.corpus import Piece
from personalize.evaluate.music.references import CHORALE_COLLECTIONS, TUNE_COLLECTIONS
from personalize.generate import DENSITY_EDGES, Controls
from personalize.music.gm import DRUMS
from personalize.music.score import Note, meter_ticks, score_to_midi, texture_of

ROLES = ("tune", "soprano", "alto", "tenor", "bass")
# Register of each role, MIDI pitches (inclusive): the 5th to 95th percentile of the corpus notes of that role
# (fiddle tunes; the four chorale voices).
ROLE_RANGES = {"tune": (64, 81), "soprano": (64, 76), "alto": (60, 70), "tenor": (54, 65), "bass": (43, 58)}
# Density each bin aims at, notes per quarter note per pitched part: the middle of the two inner bins, and
# about a fifth beyond the edge for the open-ended outer bins (0.70, 1.125, 1.575, 2.2 for edges 0.9/1.35/1.8).
DENSITY_TARGETS = (
    DENSITY_EDGES[0] * 0.78,
    *((a + b) / 2 for a, b in itertools.pairwise(DENSITY_EDGES)),
    DENSITY_EDGES[-1] * 1.22,
)
RANDOM_DURATIONS = np.array([1, 2, 3, 4, 6, 8])  # sixteenths
MIN_CELL_SEQUENCES = 20  # a (role, mode, meter kind) chain needs this many training lines, else the role's


def roles_for(texture: str, n_pitched: int) -> list[str]:
    """Roles of a request's pitched parts, top to bottom.

    >>> roles_for("chorale", 4)
    ['soprano', 'alto', 'tenor', 'bass']
    >>> roles_for("band", 2)
    ['soprano', 'bass']
    """
    if texture == "tune":
        return (
            ["tune", "bass"][:n_pitched]
            if n_pitched <= 2
            else ["tune", *["alto", "tenor"][: n_pitched - 2], "bass"]
        )
    table = {
        1: ["soprano"],
        2: ["soprano", "bass"],
        3: ["soprano", "tenor" if texture == "chorale" else "alto", "bass"],
    }
    return table.get(n_pitched, ["soprano", "alto", "tenor", "bass"])


def key_offset(key_pc: int) -> int:
    """The tonic's offset from C within -5..6 semitones, so transposed lines stay near their register."""
    return int(key_pc) if int(key_pc) <= 6 else int(key_pc) - 12


def _with_drums(controls: Controls, parts: list[list[Note]], seed: int) -> pretty_midi.PrettyMIDI:
    """Assemble the pitched parts in request order and add the product's drum part where asked."""
    from personalize.generate.drums import drum_part

    pitched = controls.pitched_programs
    pm = score_to_midi(parts, pitched, controls.tempo_bpm, controls.meter)
    out: list[pretty_midi.Instrument] = []
    it = iter(pm.instruments)
    for p in controls.programs:
        if p == DRUMS:
            out.append(
                drum_part(controls.meter, controls.tempo_bpm, controls.density_bin, controls.bars, seed)
            )
        else:
            out.append(next(it))
    pm.instruments = out
    return pm


def request_roles(controls: Controls) -> list[str]:
    return roles_for(
        texture_of(len(controls.pitched_programs), controls.has_drums), len(controls.pitched_programs)
    )


# ----------------------------------------------------------------------------------------------------------
# Random notes in the scale


def _tilted_duration_probs(mean_ticks: float) -> np.ndarray:
    """Probabilities over :data:`RANDOM_DURATIONS` proportional to exp(-lam * d), lam chosen so the mean
    duration is ``mean_ticks`` (clipped to what the set can reach)."""
    d = RANDOM_DURATIONS.astype(float)
    target = float(np.clip(mean_ticks, d.min() + 0.05, d.max() - 0.05))
    lo, hi = -5.0, 5.0
    for _ in range(60):
        lam = (lo + hi) / 2
        w = np.exp(-lam * (d - d.mean()))
        if (w * d).sum() / w.sum() > target:
            lo = lam
        else:
            hi = lam
    w = np.exp(-lam * (d - d.mean()))
    return w / w.sum()


@dataclass
class RandomInScale:
    """Random notes in the key's scale at the requested density (see the module docstring)."""

    name: str = "random_in_scale"

    def generate(self, controls: list[Controls], seed: int) -> list[pretty_midi.PrettyMIDI]:
        from personalize.music.metrics import scale_of

        rng = np.random.default_rng(seed)
        out = []
        for k, c in enumerate(controls):
            bar_ticks, _, _ = meter_ticks(c.meter)
            end = c.bars * bar_ticks
            probs = _tilted_duration_probs(4.0 / DENSITY_TARGETS[c.density_bin])
            scale = set(scale_of(c.key_pc, c.mode))
            parts = []
            for role in request_roles(c):
                lo, hi = ROLE_RANGES[role]
                pitches = [p for p in range(lo, hi + 1) if p % 12 in scale]
                notes: list[Note] = []
                t = 0
                while t < end:
                    dur = int(min(rng.choice(RANDOM_DURATIONS, p=probs), end - t))
                    notes.append((t, dur, int(rng.choice(pitches))))
                    t += dur
                parts.append(notes)
            out.append(_with_drums(c, parts, seed + k))
        return out


# ----------------------------------------------------------------------------------------------------------
# First-order Markov chain


def training_lines(pieces: list[Piece]) -> list[tuple[str, list[Note], int, str, str]]:
    """``(role, line, key_pc, mode, meter)`` for every usable corpus line: the four voices of each four-part
    chorale, the melody of each solo tune (pieces in the corpus's first view, sixteenth ticks)."""
    lines = []
    for p in pieces:
        parts = [part for part in p.parts if part]
        if p.collection in CHORALE_COLLECTIONS and len(parts) == 4:
            for role, part in zip(("soprano", "alto", "tenor", "bass"), parts, strict=True):
                lines.append((role, part, p.key_pc, p.mode, p.meter))
        elif p.collection in TUNE_COLLECTIONS and len(parts) == 1:
            lines.append(("tune", parts[0], p.key_pc, p.mode, p.meter))
    return lines


State = tuple[int, int]  # (pitch - tonic offset, duration ticks)


@dataclass
class _Chain:
    starts: tuple[list[State], np.ndarray]
    moves: dict[State, tuple[list[State], np.ndarray]]
    lines: int


def _normalize(counter: Counter[State]) -> tuple[list[State], np.ndarray]:
    states = list(counter)
    p = np.array([counter[s] for s in states], dtype=float)
    return states, p / p.sum()


def _fit_chain(lines: list[list[State]]) -> _Chain:
    starts: Counter[State] = Counter()
    moves: dict[State, Counter[State]] = defaultdict(Counter)
    for line in lines:
        if not line:
            continue
        starts[line[0]] += 1
        for a, b in itertools.pairwise(line):
            moves[a][b] += 1
    return _Chain(_normalize(starts), {s: _normalize(c) for s, c in moves.items()}, len(lines))


class MarkovChain:
    """First-order Markov chain over ``(pitch relative to the tonic, duration)`` per role (module docstring)."""

    name = "markov"

    def __init__(self) -> None:
        self.chains: dict[tuple[str, str | None, bool | None], _Chain] = {}

    def fit(self, training: Iterable[tuple[str, list[Note], int, str, str]]) -> MarkovChain:
        """Count transitions from ``(role, line, key_pc, mode, meter)`` training lines (rests are dropped:
        the chain writes one note after another)."""
        cells: dict[tuple[str, str | None, bool | None], list[list[State]]] = defaultdict(list)
        for role, line, key_pc, mode, meter in training:
            off = key_offset(key_pc)
            states = [(p - off, min(d, 24)) for _, d, p in line]
            compound = meter_ticks(meter)[2]
            cells[(role, mode, compound)].append(states)
            cells[(role, None, None)].append(states)
        self.chains = {cell: _fit_chain(lines) for cell, lines in cells.items()}
        return self

    def _chain(self, role: str, mode: str, compound: bool) -> _Chain:
        chain = self.chains.get((role, mode, compound))
        if chain is not None and chain.lines >= MIN_CELL_SEQUENCES:
            return chain
        if (role, None, None) not in self.chains:
            raise ValueError(
                f"the Markov chain has no training lines for role {role!r}: fit it on the corpus first"
            )
        return self.chains[(role, None, None)]

    def sample_line(
        self, role: str, key_pc: int, mode: str, meter: str, end_tick: int, rng: np.random.Generator
    ) -> list[Note]:
        """One line of ``end_tick`` sixteenths (the last note cut at the end); a state with no recorded
        successor restarts the chain from its opening distribution."""
        chain = self._chain(role, mode, meter_ticks(meter)[2])
        off = key_offset(key_pc)
        notes: list[Note] = []
        t = 0
        state: State | None = None
        while t < end_tick:
            states, probs = chain.moves.get(state, chain.starts) if state is not None else chain.starts
            state = states[int(rng.choice(len(states), p=probs))]
            dur = min(state[1], end_tick - t)
            notes.append((t, dur, int(np.clip(state[0] + off, 21, 108))))
            t += dur
        return notes

    def generate(self, controls: list[Controls], seed: int) -> list[pretty_midi.PrettyMIDI]:
        rng = np.random.default_rng(seed)
        out = []
        for k, c in enumerate(controls):
            end = c.bars * meter_ticks(c.meter)[0]
            parts = [self.sample_line(role, c.key_pc, c.mode, c.meter, end, rng) for role in request_roles(c)]
            out.append(_with_drums(c, parts, seed + k))
        return out
