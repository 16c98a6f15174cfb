"""Make any MIDI safe to synthesize: parse defensively, close open notes, clamp ranges, cap length, merge overlaps.

FluidSynth plays exactly what it is told: a note without a note-off rings until the end of time, a program of
300 is undefined and a two-hour file takes minutes. Everything the synthesizer sees passes through here first,
and every repair is listed in ``SanitizedMidi.fixes`` so the caller can log what was changed.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np
import pretty_midi

from personalize.render.errors import CORRUPT_MIDI, NO_NOTES, RenderRejected

MIN_NOTE_S = 0.001  # shorter than this is inaudible in FluidSynth and usually a tempo or quantization bug
MAX_MIDI_BYTES = 32 * 1024 * 1024


@dataclass
class Part:
    """One instrument of the piece, ready to sequence: note arrays in seconds plus controllers."""

    name: str
    program: int  # 0..127 (GM program, or drum kit number when is_drum)
    is_drum: bool
    start_s: np.ndarray
    end_s: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    control_changes: list[tuple[float, int, int]] = field(default_factory=list)  # (time_s, number, value)
    pitch_bends: list[tuple[float, int]] = field(default_factory=list)  # (time_s, -8192..8191)


@dataclass
class SanitizedMidi:
    parts: list[Part]
    end_s: float  # last note-off, after capping
    fixes: list[str]

    @property
    def n_notes(self) -> int:
        return sum(len(p.pitch) for p in self.parts)


def load_midi(midi: pretty_midi.PrettyMIDI | bytes | Path | str) -> tuple[pretty_midi.PrettyMIDI, list[str]]:
    """Parse MIDI bytes or a file into PrettyMIDI, closing notes that never get a note-off.

    pretty_midi silently drops a note-on without its note-off; a generator that forgot note-offs would
    lose its music, so such notes are closed at the end of their track (at least one beat long) instead.
    """
    if isinstance(midi, pretty_midi.PrettyMIDI):
        return midi, []
    if isinstance(midi, str | Path):
        path = Path(midi)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RenderRejected(CORRUPT_MIDI, f"cannot read MIDI file {path}: {exc}") from None
    else:
        data = bytes(midi)
    if len(data) > MAX_MIDI_BYTES:
        raise RenderRejected(
            CORRUPT_MIDI,
            f"MIDI is {len(data) / 2**20:.1f} MiB, over the {MAX_MIDI_BYTES // 2**20} MiB a track may have: "
            "check the generator output.",
        )
    if not data:
        raise RenderRejected(CORRUPT_MIDI, "MIDI is empty (0 bytes): the file was not written completely.")
    try:
        mid = mido.MidiFile(file=io.BytesIO(data), clip=True)
    except Exception as exc:  # mido raises OSError, EOFError, KeyError, ValueError... on damaged files
        raise RenderRejected(
            CORRUPT_MIDI,
            f"not a readable Standard MIDI File ({type(exc).__name__}: {exc}); regenerate or re-export it.",
        ) from None
    closed = _close_open_notes(mid)
    try:
        pm = pretty_midi.PrettyMIDI(mido_object=mid)
    except Exception as exc:
        raise RenderRejected(
            CORRUPT_MIDI, f"MIDI could not be interpreted ({type(exc).__name__}: {exc}); regenerate it."
        ) from None
    fixes = [f"closed {closed} note(s) that had no note-off"] if closed else []
    return pm, fixes


def _close_open_notes(mid: mido.MidiFile) -> int:
    """Add a note-off for every note-on left open at the end of its track; returns how many were added."""
    closed = 0
    beat_ticks = max(1, int(mid.ticks_per_beat or 480))
    for track in mid.tracks:
        open_notes: dict[tuple[int, int], list[int]] = {}
        tick = 0
        timed: list[tuple[int, mido.Message | mido.MetaMessage]] = []
        for msg in track:
            tick += msg.time
            timed.append((tick, msg))
            if msg.type == "note_on" and msg.velocity > 0:
                open_notes.setdefault((msg.channel, msg.note), []).append(tick)
            elif msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0):
                stack = open_notes.get((msg.channel, msg.note))
                if stack:
                    stack.pop()
        leftovers = [(ch, note, t0) for (ch, note), starts in open_notes.items() for t0 in starts]
        if not leftovers:
            continue
        closed += len(leftovers)
        body = [(t, m) for t, m in timed if not (m.is_meta and m.type == "end_of_track")]
        end_tick = max((t for t, _ in timed), default=0)
        for ch, note, t0 in leftovers:
            body.append((max(end_tick, t0 + beat_ticks), mido.Message("note_off", channel=ch, note=note)))
        body.sort(key=lambda item: item[0])  # stable: original order kept within a tick
        last = 0
        track.clear()
        for t, msg in body:
            track.append(msg.copy(time=t - last))
            last = t
        track.append(mido.MetaMessage("end_of_track", time=0))
    return closed


def sanitize(
    pm: pretty_midi.PrettyMIDI, max_duration_s: float, fixes: list[str] | None = None
) -> SanitizedMidi:
    """Clamp, cap and de-duplicate every part of ``pm``; raise :class:`RenderRejected` when no note is left."""
    counts: Counter[str] = Counter()
    parts: list[Part] = []
    n_in = 0
    for index, inst in enumerate(pm.instruments):
        n_in += len(inst.notes)
        part = _sanitize_instrument(inst, index, max_duration_s, counts)
        if part is not None:
            parts.append(part)
    messages = list(fixes or [])
    labels = {
        "bad_time": "dropped {} note(s) with a missing or infinite time",
        "negative_start": "moved {} note(s) that started before 0 s",
        "zero_length": "dropped {} note(s) shorter than 1 ms",
        "pitch_folded": "moved {} note(s) by octaves into MIDI pitch 0..127",
        "velocity_clamped": "clamped {} velocity value(s) into 1..127",
        "program_clamped": "clamped {} program number(s) into 0..127",
        "after_cap": "dropped {} note(s) after the length cap",
        "cut_at_cap": "shortened {} note(s) at the length cap",
        "merged": "merged {} overlapping identical note(s)",
        "controller_clamped": "clamped or dropped {} controller/pitch-bend event(s)",
    }
    for key, label in labels.items():
        if counts[key]:
            messages.append(label.format(counts[key]))
    if counts["after_cap"] or counts["cut_at_cap"]:
        messages.append(f"capped the track at {max_duration_s:g} s")
    if not parts:
        if n_in == 0:
            detail = "the MIDI has no notes at all: the generator produced an empty piece; regenerate it."
        else:
            detail = (
                f"none of its {n_in} note(s) is playable after sanitizing ({'; '.join(messages)}); "
                "an absurd tempo or broken timing squeezes notes to nothing: check the tempo map."
            )
        raise RenderRejected(NO_NOTES, detail)
    end_s = max(float(p.end_s.max()) for p in parts)
    return SanitizedMidi(parts=parts, end_s=end_s, fixes=messages)


def _sanitize_instrument(
    inst: pretty_midi.Instrument, index: int, max_duration_s: float, counts: Counter[str]
) -> Part | None:
    program = int(inst.program)
    if not 0 <= program <= 127:
        counts["program_clamped"] += 1
        program = min(max(program, 0), 127)
    if not inst.notes:
        return None
    start = np.array([n.start for n in inst.notes], dtype=np.float64)
    end = np.array([n.end for n in inst.notes], dtype=np.float64)
    pitch = np.array([n.pitch for n in inst.notes], dtype=np.int64)
    velocity = np.array([n.velocity for n in inst.notes], dtype=np.int64)

    finite = np.isfinite(start) & np.isfinite(end)
    counts["bad_time"] += int((~finite).sum())
    start, end, pitch, velocity = start[finite], end[finite], pitch[finite], velocity[finite]

    negative = start < 0
    counts["negative_start"] += int(negative.sum())
    end = np.where(negative, end - start, end)
    start = np.where(negative, 0.0, start)

    late = start >= max_duration_s
    counts["after_cap"] += int(late.sum())
    start, end, pitch, velocity = start[~late], end[~late], pitch[~late], velocity[~late]
    cut = end > max_duration_s
    counts["cut_at_cap"] += int(cut.sum())
    end = np.minimum(end, max_duration_s)

    short = (end - start) < MIN_NOTE_S
    counts["zero_length"] += int(short.sum())
    start, end, pitch, velocity = start[~short], end[~short], pitch[~short], velocity[~short]

    out_of_range = (pitch < 0) | (pitch > 127)
    if out_of_range.any():
        counts["pitch_folded"] += int(out_of_range.sum())
        if inst.is_drum:
            pitch = np.clip(pitch, 0, 127)
        else:
            # Whole octaves keep the pitch class (the key the verifier checked) intact.
            pitch = np.where(pitch < 0, pitch + 12 * ((11 - pitch) // 12), pitch)
            pitch = np.where(pitch > 127, pitch - 12 * ((pitch - 116) // 12), pitch)
    bad_velocity = (velocity < 1) | (velocity > 127)
    counts["velocity_clamped"] += int(bad_velocity.sum())
    velocity = np.clip(velocity, 1, 127)

    start, end, pitch, velocity = _merge_identical(start, end, pitch, velocity, counts)
    if len(start) == 0:
        return None

    controls: list[tuple[float, int, int]] = []
    for cc in inst.control_changes:
        ok = math.isfinite(cc.time) and 0 <= cc.number <= 127 and cc.time < max_duration_s
        if not ok:
            counts["controller_clamped"] += 1
            continue
        value = min(max(int(cc.value), 0), 127)
        counts["controller_clamped"] += int(value != cc.value)
        controls.append((max(float(cc.time), 0.0), int(cc.number), value))
    bends: list[tuple[float, int]] = []
    for pb in inst.pitch_bends:
        if not (math.isfinite(pb.time) and pb.time < max_duration_s):
            counts["controller_clamped"] += 1
            continue
        value = min(max(int(pb.pitch), -8192), 8191)
        counts["controller_clamped"] += int(value != pb.pitch)
        bends.append((max(float(pb.time), 0.0), value))
    return Part(
        name=inst.name or f"part {index + 1}",
        program=program,
        is_drum=bool(inst.is_drum),
        start_s=start,
        end_s=end,
        pitch=pitch,
        velocity=velocity,
        control_changes=controls,
        pitch_bends=bends,
    )


def _merge_identical(
    start: np.ndarray, end: np.ndarray, pitch: np.ndarray, velocity: np.ndarray, counts: Counter[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Join notes of the same pitch that overlap: one note-off would otherwise cut both short."""
    if len(start) < 2:
        return start, end, pitch, velocity
    order = np.lexsort((start, pitch))
    start, end, pitch, velocity = start[order], end[order], pitch[order], velocity[order]
    keep_start: list[float] = []
    keep_end: list[float] = []
    keep_pitch: list[int] = []
    keep_velocity: list[int] = []
    for s, e, p, v in zip(start.tolist(), end.tolist(), pitch.tolist(), velocity.tolist(), strict=True):
        if keep_pitch and keep_pitch[-1] == p and s < keep_end[-1]:
            keep_end[-1] = max(keep_end[-1], e)
            keep_velocity[-1] = max(keep_velocity[-1], v)
            counts["merged"] += 1
            continue
        keep_start.append(s)
        keep_end.append(e)
        keep_pitch.append(p)
        keep_velocity.append(v)
    return (
        np.asarray(keep_start),
        np.asarray(keep_end),
        np.asarray(keep_pitch, dtype=np.int64),
        np.asarray(keep_velocity, dtype=np.int64),
    )
