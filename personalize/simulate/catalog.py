"""The demo world's catalog: corpus pieces transposed, given a tempo and an orchestration, written as MIDI
and then measured from the MIDI (key by key-finding, tempo, programs, density) like any other catalog file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pretty_midi
from symusic import Note, Score, Tempo, TimeSignature, Track

from personalize.music.gm import DRUMS, FAMILIES, format_programs, program_range
from personalize.music.keys import key_name
from personalize.music.measure import find_key, measure
from personalize.simulate.corpus import Piece
from personalize.simulate.segments import Segment

# GM programs each family offers for a voice role (high = melody, mid = inner voice, low = bass).
ROLE_PROGRAMS: dict[str, dict[str, list[int]]] = {
    "piano": {"high": [0], "mid": [0], "low": [0]},
    "chromatic_percussion": {"high": [11, 12], "mid": [11, 12], "low": []},
    "organ": {"high": [19, 16], "mid": [19], "low": [19]},
    "guitar": {"high": [24, 25], "mid": [24, 25], "low": [24]},
    "bass": {"high": [], "mid": [], "low": [32, 33, 35]},
    "strings": {"high": [40], "mid": [41, 40], "low": [42, 43]},
    "ensemble": {"high": [52, 48], "mid": [52, 48], "low": [48]},
    "brass": {"high": [56, 60], "mid": [60, 57], "low": [57, 58]},
    "reed": {"high": [71, 68, 65], "mid": [65, 66, 71], "low": [70]},
    "pipe": {"high": [73, 74], "mid": [73], "low": []},
    "synth_lead": {"high": [80, 81], "mid": [81], "low": []},
    "synth_pad": {"high": [89], "mid": [89, 88], "low": [89]},
}
PITCHED_FAMILIES = [f for f in FAMILIES if f in ROLE_PROGRAMS]
CATALOG_COLUMNS = ["track_id", "title", "duration_s", "tempo_bpm", "key", "meter", "programs", "density"]
_MEAN_TRACK_S = 110.0
TPQ = 480


def _roles(n_parts: int) -> list[str]:
    if n_parts == 1:
        return ["high"]
    return ["high", *(["mid"] * (n_parts - 2)), "low"]


def _pick_program(role: str, weights: dict[str, float], rng: np.random.Generator) -> int:
    usable = {f: w for f, w in weights.items() if f in ROLE_PROGRAMS and ROLE_PROGRAMS[f][role]}
    if not usable:
        usable = {"piano": 1.0}
    fams = list(usable)
    p = np.array([usable[f] for f in fams])
    family = fams[rng.choice(len(fams), p=p / p.sum())]
    options = ROLE_PROGRAMS[family][role]
    return int(options[rng.integers(len(options))])


def _bass_line(melody: dict[str, list[float]], meter: str) -> dict[str, list[float]]:
    """A bass for a lone melody: the lowest melody note of each half bar, two octaves down, held."""
    num, den = (int(x) for x in meter.split("/"))
    span_q = max(1.0, num * 4.0 / den / 2.0)
    start = np.asarray(melody["start_q"])
    pitch = np.asarray(melody["pitch"])
    slot = np.floor(start / span_q).astype(int)
    out_pitch, out_start = [], []
    for s in np.unique(slot):
        out_pitch.append(int(pitch[slot == s].min()) - 24)
        out_start.append(float(s * span_q))
    return {"pitch": out_pitch, "start_q": out_start, "dur_q": [span_q] * len(out_pitch)}


def _fit_octave(pitches: np.ndarray, program: int) -> np.ndarray:
    """Shift a voice by whole octaves so its middle sits in the instrument's comfortable range."""
    lo, hi = program_range(program)
    shift = round(((lo + hi) / 2.0 - float(np.median(pitches))) / 12.0) * 12
    out = pitches + shift
    # Stray notes outside the range move by an octave rather than leave the instrument's compass.
    out = np.where(out < lo, out + 12, out)
    out = np.where(out > hi, out - 12, out)
    return np.clip(out, 0, 127)


def _drum_track(length_q: float, rng: np.random.Generator) -> Track:
    eighths = np.arange(0.0, length_q, 0.5)
    beat = np.round(eighths) == eighths
    backbeat = beat & (np.floor(eighths).astype(int) % 2 == 1)
    pattern = [(42, eighths, 60), (36, eighths[beat & ~backbeat], 90), (38, eighths[backbeat], 85)]
    if rng.random() < 0.5:
        pattern.append((46, eighths[~beat][1::4], 55))  # an open hat now and then
    times_q = np.concatenate([t for _, t, _ in pattern])
    order = np.argsort(times_q, kind="stable")
    pitch = np.concatenate([np.full(len(t), p) for p, t, _ in pattern])[order]
    velocity = np.concatenate([np.full(len(t), v) for _, t, v in pattern])[order]
    track = Track("drums", 0, True)
    track.notes = Note.from_numpy(
        (times_q[order] * TPQ).astype(np.int32),
        np.full(len(order), TPQ // 8, dtype=np.int32),
        pitch.astype(np.int8),
        velocity.astype(np.int8),
    )
    return track


def voices_of(piece: Piece) -> list[dict[str, list[float]]]:
    """The voices an arrangement plays: a lone melody gets a bass line so every track has two parts at least."""
    if len(piece.parts) == 1:
        return [piece.parts[0], _bass_line(piece.parts[0], piece.meter)]
    return list(piece.parts)


def arrange(
    piece: Piece,
    key_pc: int,
    tempo_bpm: float,
    programs: list[int],
    drums: bool,
    repeats: int,
    rng: np.random.Generator,
) -> Score:
    """The piece transposed to ``key_pc``, one instrument per voice, repeated ``repeats`` times."""
    voices = voices_of(piece)
    hist = np.zeros(12)
    for voice in voices:
        np.add.at(hist, np.asarray(voice["pitch"], dtype=int) % 12, np.asarray(voice["dur_q"]))
    # The arrangement's own key (a bass line can tip a tune toward its dominant) is what gets transposed.
    home = find_key(hist).key_pc
    transpose = (key_pc - home) % 12
    transpose = transpose - 12 if transpose > 5 else transpose
    score = Score(TPQ)
    num, den = (int(x) for x in piece.meter.split("/"))
    score.tempos.append(Tempo(0, float(tempo_bpm)))
    score.time_signatures.append(TimeSignature(0, num, den))
    offsets_q = np.arange(repeats)[:, None] * piece.length_q
    for voice, program in zip(voices, programs, strict=True):
        pitch = _fit_octave(np.asarray(voice["pitch"]) + transpose, program)
        start_q = (np.asarray(voice["start_q"])[None, :] + offsets_q).ravel()
        dur_q = np.tile(np.maximum(np.asarray(voice["dur_q"]) * 0.95, 0.05), repeats)
        order = np.argsort(start_q, kind="stable")
        velocity = np.clip(rng.normal(78, 6, size=len(start_q)), 40, 110)
        track = Track(pretty_midi.program_to_instrument_name(program), int(program), False)
        track.notes = Note.from_numpy(
            np.round(start_q[order] * TPQ).astype(np.int32),
            np.maximum(np.round(dur_q[order] * TPQ), 1).astype(np.int32),
            np.tile(pitch, repeats)[order].astype(np.int8),
            velocity[order].astype(np.int8),
        )
        score.tracks.append(track)
    if drums:
        score.tracks.append(_drum_track(piece.length_q * repeats, rng))
    return score


def read_midi(path: Path) -> pretty_midi.PrettyMIDI:
    """A MIDI file as a PrettyMIDI object, parsed by symusic (C++, ~50x faster than mido on these files)."""
    score = Score(str(path))
    seconds = score.to("second")
    tempo = float(score.tempos[0].qpm) if len(score.tempos) else 120.0
    pm = pretty_midi.PrettyMIDI(resolution=int(score.ticks_per_quarter), initial_tempo=tempo)
    for ts in score.time_signatures:
        pm.time_signature_changes.append(pretty_midi.TimeSignature(ts.numerator, ts.denominator, 0.0))
    for track in seconds.tracks:
        inst = pretty_midi.Instrument(
            program=int(track.program), is_drum=bool(track.is_drum), name=track.name
        )
        arr = track.notes.numpy()
        inst.notes = [
            pretty_midi.Note(int(v), int(p), float(t), float(t + d))
            for t, d, p, v in zip(arr["time"], arr["duration"], arr["pitch"], arr["velocity"], strict=True)
        ]
        pm.instruments.append(inst)
    return pm


def _title(piece: Piece, key_pc: int, mode: str, programs: list[int], drums: bool) -> str:
    label = f"Chorale BWV {piece.name[3:]}" if piece.collection == "chorale" else _spaced(piece.name)
    names = []
    for p in programs:
        name = pretty_midi.program_to_instrument_name(p).split("(")[0].strip().lower()
        if name not in names:
            names.append(name)
    if drums:
        names.append("drums")
    return f"{label} in {key_name(key_pc, mode)} for {', '.join(names)}"


def _spaced(camel: str) -> str:
    out = "".join(f" {c}" if c.isupper() and i else c for i, c in enumerate(camel))
    return out.replace("  ", " ").strip()


def build_catalog(
    pieces: list[Piece],
    segments: list[Segment],
    n_tracks: int,
    midi_dir: Path,
    rng: np.random.Generator,
    random_share: float = 0.2,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Write ``n_tracks`` MIDI files into ``midi_dir`` and return one row per track with both what was
    assigned (``assigned_*``, ``style_segment``; -1 for tracks of no segment) and what was measured.

    ``random_share`` of the tracks follow no segment (any tempo, key and band), like a real catalog's long tail.
    """
    midi_dir.mkdir(parents=True, exist_ok=True)
    by_mode = {m: [p for p in pieces if p.mode == m] for m in ("major", "minor")}
    rows = []
    for i in range(n_tracks):
        track_id = f"T{i + 1:05d}"
        if rng.random() < random_share:
            seg = None
            key_pc, mode = int(rng.integers(12)), ("major", "minor")[int(rng.integers(2))]
            tempo_bpm = float(rng.uniform(56, 172))
            fams = rng.choice(PITCHED_FAMILIES, size=3, replace=False)
            weights = dict.fromkeys((str(f) for f in fams), 1.0)
            drums = bool(rng.random() < 0.3)
            collection = ("chorale", "tune")[int(rng.integers(2))]
            sparse = bool(rng.random() < 0.2)
        else:
            seg = segments[int(rng.integers(len(segments)))]
            if rng.random() < 0.85:
                key_pc, mode = seg.key_tuples[int(rng.integers(len(seg.keys)))]
            else:
                key_pc, mode = int(rng.integers(12)), ("major", "minor")[int(rng.integers(2))]
            tempo_bpm = float(seg.tempo_bpm * np.exp(rng.normal(0.0, 0.07)))
            weights = {f: w for f, w in seg.family_weights.items() if f != DRUMS}
            drums = seg.has_drums and rng.random() < 0.85
            collection = seg.collection
            sparse = bool(rng.random() < seg.sparse_share)
        candidates = [p for p in by_mode[mode] if p.collection == collection] or by_mode[mode] or pieces
        piece = candidates[int(rng.integers(len(candidates)))]
        if sparse and len(piece.parts) > 2:
            # Melody and bass only: the same piece with fewer notes per second.
            piece = Piece(**{**piece.__dict__, "parts": [piece.parts[0], piece.parts[-1]]})
        roles = _roles(len(voices_of(piece)))
        programs = [_pick_program(r, weights, rng) for r in roles]
        target_s = float(rng.lognormal(np.log(_MEAN_TRACK_S), 0.3))
        piece_s = piece.length_q * 60.0 / tempo_bpm
        repeats = int(np.clip(round(target_s / piece_s), 1, 6))
        path = midi_dir / f"{track_id}.mid"
        arrange(piece, key_pc, tempo_bpm, programs, drums, repeats, rng).dump_midi(str(path))
        measured = measure(read_midi(path))
        rows.append(
            {
                "track_id": track_id,
                "title": _title(piece, key_pc, mode, programs, drums),
                "duration_s": round(measured.duration_s, 3),
                "tempo_bpm": round(measured.tempo_bpm, 2),
                "key_pc": measured.key_pc,
                "mode": measured.mode,
                "key": key_name(measured.key_pc, measured.mode),
                "meter": measured.meter,
                "programs": format_programs(measured.programs),
                "density": round(measured.density, 3),
                "style_segment": -1 if seg is None else seg.segment_id,
                "piece": piece.name,
                "assigned_key_pc": key_pc,
                "assigned_mode": mode,
                "assigned_tempo_bpm": round(tempo_bpm, 2),
            }
        )
        if progress is not None:
            progress(i + 1)
    return pd.DataFrame(rows)
