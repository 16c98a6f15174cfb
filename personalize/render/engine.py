"""MIDI to loudness-normalized stereo audio with an in-process FluidSynth.

The soundfont is loaded once per process; every track is played by a fresh synthesizer sharing it, so
a track sounds the same, sample for sample, whatever was rendered before it. Notes are sequenced
here, not by FluidSynth's own player: every part gets its own MIDI channel (drums on channel 10 with the
drum bank), and the synthesizer writes float samples straight into the output array up to each event's
frame, so timing is exact to FluidSynth's 64-frame block and nothing is clipped or dithered to 16 bits
before loudness normalization.
"""

from __future__ import annotations

import ctypes
import time
from ctypes import c_int, c_void_p
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pretty_midi

from personalize.config import Settings
from personalize.render import loudness
from personalize.render.errors import TIMEOUT, TOO_MANY_PARTS, RenderRejected
from personalize.render.sanitize import Part, SanitizedMidi, load_midi, sanitize
from personalize.workers import one_thread_per_process

DRUM_CHANNEL = 9  # "channel 10" in GM's 1-based numbering
DRUM_BANK = 128
MIDI_CHANNELS = 256  # FluidSynth runs more than 16 channels in-process: one per part, whatever the count
SYNTH_GAIN = 0.2  # FluidSynth's default, as its command line uses; float output leaves all headroom
TAIL_MAX_S = 4.0  # release and reverb after the last note-off
REVERB_TAIL_S = 1.0  # rendered after the last voice ends, then trimmed to where it falls silent
SILENCE_DB = -60.0  # relative to the render's peak: quieter than this at the end is trimmed
CHUNK_S = 1.0  # longest single write between deadline checks
BASS_PROGRAMS = range(32, 40)


@dataclass
class RenderedAudio:
    """Stereo float32 audio, normalized, with what was measured on it."""

    samples: np.ndarray  # (frames, 2) float32
    sample_rate_hz: int
    loudness_lufs: float
    true_peak_dbtp: float
    duration_s: float
    n_notes: int = 0
    n_parts: int = 0
    fixes: list[str] = field(default_factory=list)  # what sanitizing changed
    gain_db: float = 0.0
    limited_db: float = 0.0
    timings_s: dict[str, float] = field(default_factory=dict)  # wall and CPU seconds per step


def _bind_write_float():
    import fluidsynth

    return fluidsynth.cfunc(
        "fluid_synth_write_float",
        c_int,
        ("synth", c_void_p, 1),
        ("len", c_int, 1),
        ("lout", c_void_p, 1),
        ("loff", c_int, 1),
        ("lincr", c_int, 1),
        ("rout", c_void_p, 1),
        ("roff", c_int, 1),
        ("rincr", c_int, 1),
    )


FLUID_WARN = 2  # FluidSynth's log level for warnings


def _bind_soundfont_sharing():
    import fluidsynth

    return (
        fluidsynth.cfunc("fluid_synth_get_sfont_by_id", c_void_p, ("synth", c_void_p, 1), ("id", c_int, 1)),
        fluidsynth.cfunc("fluid_synth_add_sfont", c_int, ("synth", c_void_p, 1), ("sfont", c_void_p, 1)),
        fluidsynth.cfunc("fluid_synth_remove_sfont", c_int, ("synth", c_void_p, 1), ("sfont", c_void_p, 1)),
        fluidsynth.cfunc(
            "fluid_set_log_function",
            c_void_p,
            ("level", c_int, 1),
            ("fun", c_void_p, 1),
            ("data", c_void_p, 1),
        ),
    )


class SynthEngine:
    """A soundfont loaded once, and a fresh synthesizer for every track that plays from it.

    A synthesizer keeps state from one track to the next that a reset does not clear (the reverb's
    modulation phase, the position in its 64-frame block, voice state): a track rendered after another would
    come out slightly different from the same track rendered first. So each track gets a new synthesizer,
    which costs about a millisecond since the soundfont, held by a synthesizer that never plays, is shared
    rather than loaded again: the same MIDI gives the same samples whatever the worker rendered before.
    """

    def __init__(self, soundfont: Path, sample_rate_hz: int) -> None:
        import fluidsynth

        self._fl = fluidsynth
        self.soundfont = Path(soundfont)
        self.sample_rate_hz = int(sample_rate_hz)
        self._holder = self._new_synth()
        holder_sfid = self._holder.sfload(str(self.soundfont))
        if holder_sfid < 0:
            raise RuntimeError(f"FluidSynth could not load soundfont {self.soundfont}: is it an .sf2 file?")
        self._holder_sfid = holder_sfid
        self._get_sfont, self._add_sfont, self._remove_sfont, self._set_log = _bind_soundfont_sharing()
        self._sfont = self._get_sfont(self._holder.synth, holder_sfid)
        self._write = _bind_write_float()
        self.synth = self._holder  # the synthesizer of the track being rendered
        self.sfid = holder_sfid
        self._tracks = 0

    def _new_synth(self):
        return self._fl.Synth(
            gain=SYNTH_GAIN,
            samplerate=float(self.sample_rate_hz),
            channels=MIDI_CHANNELS,
            **{"synth.cpu-cores": 1, "synth.lock-memory": 0},
        )

    def _start_track(self) -> None:
        """A new synthesizer playing from the shared soundfont, with nothing of any earlier track in it."""
        synth = self._new_synth()
        sfid = self._add_sfont(synth.synth, self._sfont)
        if sfid < 0:
            synth.delete()
            raise RuntimeError(
                f"FluidSynth could not share soundfont {self.soundfont} with a new synthesizer"
            )
        self.synth, self.sfid = synth, sfid

    def _end_track(self) -> None:
        """Hand the soundfont back and delete the track's synthesizer (the soundfont stays loaded)."""
        synth = self.synth
        if synth is self._holder:
            return
        self.synth, self.sfid = self._holder, self._holder_sfid
        # removing the soundfont resets every channel's program, each reset warning that no preset is left
        previous = self._set_log(FLUID_WARN, None, None)
        try:
            self._remove_sfont(synth.synth, self._sfont)
        finally:
            self._set_log(FLUID_WARN, previous, None)
        synth.delete()

    def _has_preset(self, bank: int, program: int) -> bool:
        return self.synth.sfpreset_name(self.sfid, bank, program) is not None

    def render(self, song: SanitizedMidi, deadline: float, fixes: list[str]) -> np.ndarray:
        """Sequence ``song`` into the synthesizer; returns raw (frames, 2) float32 with a release tail."""
        self._start_track()
        try:
            return self._render(song, deadline, fixes)
        finally:
            self._end_track()

    def _render(self, song: SanitizedMidi, deadline: float, fixes: list[str]) -> np.ndarray:
        fl, synth = self._fl, self.synth.synth
        self._tracks += 1
        sr = self.sample_rate_hz
        channels = self._assign_channels(song.parts, fixes)

        frames, order, kinds, chans, data1, data2 = self._events(song.parts, channels)
        end_frame = int(np.ceil(song.end_s * sr)) + 1
        # every frame returned is written by the synthesizer first: no need to zero the buffer
        out = np.empty((end_frame + int((TAIL_MAX_S + REVERB_TAIL_S) * sr), 2), dtype=np.float32)
        base = out.ctypes.data
        write = self._write
        chunk = int(CHUNK_S * sr)
        noteon, noteoff, cc, bend = (
            fl.fluid_synth_noteon,
            fl.fluid_synth_noteoff,
            fl.fluid_synth_cc,
            fl.fluid_synth_pitch_bend,
        )

        def write_to(pos: int, target: int) -> int:
            while pos < target:
                n = min(chunk, target - pos)
                write(synth, n, base + pos * 8, 0, 2, base + pos * 8, 1, 2)
                pos += n
                if time.monotonic() > deadline:
                    raise RenderRejected(TIMEOUT, "")
            return pos

        pos = 0
        frames_list = frames[order].tolist()
        for i, k in enumerate(order.tolist()):
            target = frames_list[i]
            if target > pos:
                pos = write_to(pos, target)
            kind = kinds[k]
            if kind == 2:
                noteon(synth, chans[k], data1[k], data2[k])
            elif kind == 1:
                noteoff(synth, chans[k], data1[k])
            elif kind == 0:
                cc(synth, chans[k], data1[k], data2[k])
            else:
                bend(synth, chans[k], data1[k])
        pos = write_to(pos, max(pos, end_frame))
        for ch in set(channels):
            cc(synth, ch, 64, 0)  # a sustain pedal left down would hold every note forever
            fl.fluid_synth_all_notes_off(synth, ch)
        tail_end = min(len(out), pos + int(TAIL_MAX_S * sr))
        step = sr // 10
        while pos < tail_end and fl.fluid_synth_get_active_voice_count(synth) > 0:
            pos = write_to(pos, min(pos + step, tail_end))
        pos = write_to(pos, min(len(out), pos + int(REVERB_TAIL_S * sr)))
        return out[:pos]

    def _assign_channels(self, parts: list[Part], fixes: list[str]) -> list[int]:
        """One channel per part: drums on channel 10 (further drum parts above 16), melodic ones elsewhere."""
        melodic = iter([c for c in range(MIDI_CHANNELS) if c != DRUM_CHANNEL])
        spare = iter(range(16, MIDI_CHANNELS))
        used: set[int] = set()
        channels: list[int] = []
        if len(parts) > MIDI_CHANNELS:
            raise RenderRejected(
                TOO_MANY_PARTS,
                f"{len(parts)} parts, more than the {MIDI_CHANNELS} channels the synthesizer has: "
                "merge parts that share an instrument.",
            )
        for part in parts:
            if part.is_drum and DRUM_CHANNEL not in used:
                ch = DRUM_CHANNEL
            elif part.is_drum:
                ch = next(c for c in spare if c not in used)
            else:
                ch = next(c for c in melodic if c not in used)
            used.add(ch)
            channels.append(ch)
            bank = DRUM_BANK if part.is_drum else 0
            program = part.program
            if not self._has_preset(bank, program):
                fixes.append(
                    f"{part.name}: soundfont has no {'drum kit' if part.is_drum else 'program'} {program}, "
                    "used 0 instead"
                )
                program = 0
            self.synth.program_select(ch, self.sfid, bank, program)
        return channels

    def _events(
        self, parts: list[Part], channels: list[int]
    ) -> tuple[np.ndarray, np.ndarray, list[int], list[int], list[int], list[int]]:
        """All events as parallel arrays, plus their play order (frame, then controllers < note-offs < note-ons)."""
        sr = self.sample_rate_hz
        frames: list[np.ndarray] = []
        kinds: list[np.ndarray] = []
        chans: list[np.ndarray] = []
        d1: list[np.ndarray] = []
        d2: list[np.ndarray] = []
        pans = _default_pans(parts)
        for part, ch, pan in zip(parts, channels, pans, strict=True):
            n = len(part.pitch)
            on = np.round(part.start_s * sr).astype(np.int64)
            off = np.maximum(np.round(part.end_s * sr).astype(np.int64), on + 1)
            frames += [on, off]
            kinds += [np.full(n, 2), np.full(n, 1)]
            chans += [np.full(2 * n, ch)]
            d1 += [part.pitch, part.pitch]
            d2 += [part.velocity, np.zeros(n, dtype=np.int64)]
            controls = list(part.control_changes)
            if pan is not None:
                controls.append((0.0, 10, pan))
            if controls:
                frames.append(np.round(np.array([c[0] for c in controls]) * sr).astype(np.int64))
                kinds.append(np.zeros(len(controls), dtype=np.int64))
                chans.append(np.full(len(controls), ch))
                d1.append(np.array([c[1] for c in controls], dtype=np.int64))
                d2.append(np.array([c[2] for c in controls], dtype=np.int64))
            if part.pitch_bends:
                frames.append(np.round(np.array([b[0] for b in part.pitch_bends]) * sr).astype(np.int64))
                kinds.append(np.full(len(part.pitch_bends), 3))
                chans.append(np.full(len(part.pitch_bends), ch))
                # FluidSynth's pitch wheel is 0..16383 with 8192 at rest
                d1.append(np.array([b[1] + 8192 for b in part.pitch_bends], dtype=np.int64))
                d2.append(np.zeros(len(part.pitch_bends), dtype=np.int64))
        all_frames = np.concatenate(frames)
        all_kinds = np.concatenate(kinds)
        priority = np.where(all_kinds == 2, 2, np.where(all_kinds == 1, 1, 0))
        order = np.lexsort((priority, all_frames))
        return (
            all_frames,
            order,
            all_kinds.tolist(),
            np.concatenate(chans).tolist(),
            np.concatenate(d1).tolist(),
            np.concatenate(d2).tolist(),
        )


def _default_pans(parts: list[Part]) -> list[int | None]:
    """Spread melodic parts across the stereo field; drums, bass and parts with their own pan stay put."""
    movable = [
        i
        for i, p in enumerate(parts)
        if not p.is_drum and p.program not in BASS_PROGRAMS and not any(c[1] == 10 for c in p.control_changes)
    ]
    pans: list[int | None] = [None] * len(parts)
    if len(movable) >= 2:
        for rank, i in enumerate(movable):
            pans[i] = round(34 + 60 * rank / (len(movable) - 1))  # 34..94 around the centre 64
    return pans


_ENGINES: dict[tuple[str, int], SynthEngine] = {}


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # the largest glibc accepts on 64-bit


def keep_freed_buffers() -> None:
    """Let this process reuse the memory of freed track-sized arrays instead of returning it to the kernel.

    A worker allocates and frees the same handful of 10-30 MB arrays for every track. By default glibc
    serves each from a fresh memory map, and the kernel zeroes every page of it again on first touch:
    about a fifth of loudness normalization's time. Raising glibc's map and trim thresholds keeps those
    buffers in the heap for the next track. Elsewhere than glibc this does nothing.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
    mallopt(M_TRIM_THRESHOLD, 4 * MMAP_THRESHOLD_MAX)


def prepare_worker() -> None:
    """Set up a process that renders track after track: one numerical thread, freed buffers kept.

    Rendering runs one worker process per core; a BLAS thread pool inside each worker only competes with
    the other workers, and its idle threads spin: left alone they cost a worker about a fifth of its CPU.
    """
    one_thread_per_process()
    keep_freed_buffers()


def engine_for(soundfont: Path, sample_rate_hz: int) -> SynthEngine:
    """This process's synthesizer for a soundfont and rate, created (soundfont loaded) on first use."""
    key = (str(soundfont), int(sample_rate_hz))
    engine = _ENGINES.get(key)
    if engine is None:
        engine = _ENGINES[key] = SynthEngine(soundfont, sample_rate_hz)
    return engine


def _trim_and_fade(
    samples: np.ndarray, sample_rate_hz: int, fade_out_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the silent end of the tail, then fade the last moments so the file never ends on a click.

    Works in ``samples``' own buffer (the engine's fresh render): returns a view of it and the per-frame
    sample peak of that view, which loudness normalization reuses.
    """
    level = loudness.peak_level(samples)
    peak = float(level.max()) if len(level) else 0.0
    if not np.isfinite(peak):  # a broken soundfont can produce NaN or infinity: silence them
        np.nan_to_num(samples, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        level = loudness.peak_level(samples)
        peak = float(level.max())
    if peak <= 0:
        return samples, level
    above = level > peak * 10 ** (SILENCE_DB / 20)
    last_loud = len(above) - 1 - int(np.argmax(above[::-1]))
    end = min(len(samples), last_loud + 1 + int(0.05 * sample_rate_hz))
    out, level = samples[:end], level[:end]
    fade = min(int(fade_out_s * sample_rate_hz), len(out) // 10)
    if fade > 1:
        out[-fade:] *= np.cos(np.linspace(0.0, np.pi / 2, fade, dtype=np.float32))[:, None] ** 2
        level[-fade:] = loudness.peak_level(out[-fade:])
    return out, level


def render_midi(
    midi: pretty_midi.PrettyMIDI | bytes | Path | str,
    settings: Settings,
    *,
    sample_rate_hz: int | None = None,
    target_lufs: float | None = None,
    timeout_s: float | None = None,
) -> RenderedAudio:
    """Render ``midi`` to stereo float32 at the target loudness; raise :class:`RenderRejected` when it cannot.

    Parameters
    ----------
    midi
        A PrettyMIDI object, Standard MIDI File bytes, or a path to a ``.mid`` file.
    settings
        Soundfont, sample rate, loudness target, true-peak ceiling, length cap and timeout.
    sample_rate_hz, target_lufs, timeout_s
        Override the settings for this call (Opus needs 48 kHz).
    """
    t0, c0 = time.monotonic(), time.thread_time()
    timeout = settings.render_timeout_s if timeout_s is None else timeout_s
    deadline = t0 + timeout
    sr = int(sample_rate_hz or settings.sample_rate_hz)
    target = settings.target_lufs if target_lufs is None else target_lufs
    try:
        pm, fixes = load_midi(midi)
        song = sanitize(pm, settings.render_max_duration_s, fixes)
        t1, c1 = time.monotonic(), time.thread_time()
        engine = engine_for(settings.resolved_soundfont, sr)
        raw = engine.render(song, deadline, song.fixes)
        t2, c2 = time.monotonic(), time.thread_time()
        trimmed, peaks = _trim_and_fade(raw, sr, settings.render_fade_out_s)
        level = loudness.normalize(
            trimmed,
            sr,
            target,
            settings.true_peak_max_dbtp,
            settings.render_min_lufs,
            level=peaks,
            in_place=True,
        )
        t3, c3 = time.monotonic(), time.thread_time()
    except RenderRejected as exc:
        if exc.reason == TIMEOUT:
            raise RenderRejected(
                TIMEOUT,
                f"rendering took longer than {timeout:g} s (PERSONALIZE_RENDER_TIMEOUT_S); the piece is "
                "too long or too dense to render in time: shorten it or raise the timeout.",
            ) from None
        raise
    if time.monotonic() > deadline:
        raise RenderRejected(
            TIMEOUT,
            f"rendering took {time.monotonic() - t0:.1f} s, over the {timeout:g} s allowed per track.",
        )
    return RenderedAudio(
        samples=level.samples,
        sample_rate_hz=sr,
        loudness_lufs=level.loudness_lufs,
        true_peak_dbtp=level.true_peak_dbtp,
        duration_s=len(level.samples) / sr,
        n_notes=song.n_notes,
        n_parts=len(song.parts),
        fixes=song.fixes,
        gain_db=level.gain_db,
        limited_db=level.limited_db,
        timings_s={
            "parse_s": t1 - t0,
            "synth_s": t2 - t1,
            "loudness_s": t3 - t2,
            "parse_cpu_s": c1 - c0,
            "synth_cpu_s": c2 - c1,
            "loudness_cpu_s": c3 - c2,
        },
    )
