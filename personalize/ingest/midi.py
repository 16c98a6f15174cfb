"""Measure catalog features from MIDI files in a separate worker process with a time limit and a size cap,
so a corrupt, hostile or enormous file is quarantined with a reason instead of crashing or hanging ingest.

Files as they are written in the wild: the tempo map is read from every track (many type-1 files keep it on
a track other than the first, which a reader looking only at track 0 takes for 120 BPM), the duration runs
to the end of the last note (not to a controller reset or marker long after the music), and whatever the
parser warns about comes back with the file, so each file's warnings are logged once, naming it."""

from __future__ import annotations

import contextlib
import hashlib
import io
import multiprocessing as mp
import re
import warnings
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from personalize.workers import ProcessId, die_with_parent, this_process

MIDI_SUFFIXES = (".mid", ".midi", ".kar", ".smf")
_WORKER_START_S = 120.0  # a fresh worker imports pretty_midi and numpy before the first file


@dataclass
class MidiOutcome:
    """A file's features (``features``) or why it was refused (``reason`` and ``detail``)."""

    path: Path
    features: dict[str, object] | None = None
    reason: str | None = None
    detail: str | None = None
    warnings: list[str] = field(default_factory=list)


def midi_track_id(relative_path: Path) -> str:
    """Stable track id from the file's path relative to the ingested folder: a lower-case slug
    (``Bach/BWV 66.6.mid`` -> ``midi-bach-bwv-66-6``); long paths keep their start and gain a hash."""
    stem = str(relative_path.with_suffix("")).replace("\\", "/")
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "track"
    track_id = f"midi-{slug}"
    if len(track_id) > 64:
        digest = hashlib.sha1(stem.encode("utf-8", "surrogateescape")).hexdigest()[:10]
        track_id = f"{track_id[:53]}-{digest}"
    return track_id


def find_midi_files(directory: Path) -> list[Path]:
    """MIDI files under ``directory`` (recursively), in a stable order."""
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES)


TEMPO_MAP_EVENTS = ("set_tempo", "time_signature", "key_signature")


def tempo_map_on_first_track(midi) -> int:  # type: ignore[no-untyped-def]
    """Move every tempo, time and key signature event of a mido file onto its first track, in place, at the
    same tick (the place readers look for the tempo map); returns how many events moved."""
    if len(midi.tracks) < 2 or midi.type == 2:
        return 0
    moved: list[tuple[int, object]] = []
    for track in midi.tracks[1:]:
        tick, kept, carry = 0, [], 0
        for msg in track:
            tick += msg.time
            if msg.is_meta and msg.type in TEMPO_MAP_EVENTS:
                moved.append((tick, msg))
                carry += msg.time
                continue
            kept.append(msg.copy(time=msg.time + carry))
            carry = 0
        track[:] = kept
    if not moved:
        return 0
    first, tick = [], 0
    for msg in midi.tracks[0]:
        tick += msg.time
        first.append((tick, msg))
    end = [m for m in first if m[1].type == "end_of_track"]
    body = [m for m in first if m[1].type != "end_of_track"] + moved
    body.sort(key=lambda m: m[0])  # stable: at one tick, the first track's own events stay first
    last_tick = max([t for t, _ in body] + [t for t, _ in end] or [0])
    rebuilt, previous = [], 0
    for t, msg in [*body, *((last_tick, m) for _, m in end)]:
        rebuilt.append(msg.copy(time=t - previous))
        previous = t
    midi.tracks[0][:] = rebuilt
    return len(moved)


def measure_bytes(data: bytes) -> tuple[dict[str, object], list[str]]:
    """Parse and measure one file's bytes: its features and the parser's warnings (each once). Raises
    ``_Refused`` with a reason code when the file cannot be used."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        features = _measure(data)
    said = list(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))
    return features, said


def _parse(data: bytes):  # type: ignore[no-untyped-def]
    import mido
    import pretty_midi

    try:
        midi = mido.MidiFile(file=io.BytesIO(data))
    except Exception as first:
        # Some writers put out-of-range data bytes in events; mido can clip them instead of giving up.
        try:
            midi = mido.MidiFile(file=io.BytesIO(data), clip=True)
        except Exception:
            raise _Refused(
                "midi_unreadable",
                f"not a readable MIDI file ({type(first).__name__}: {first}). It may be truncated or corrupt; "
                "export it again from the program that wrote it.",
            ) from None
    moved = tempo_map_on_first_track(midi)
    if moved:
        warnings.warn(
            f"{moved} tempo/meter/key event(s) were on tracks after the first; read from there", stacklevel=2
        )
    try:
        return pretty_midi.PrettyMIDI(mido_object=midi)
    except Exception as exc:
        raise _Refused(
            "midi_unreadable",
            f"not a usable MIDI file ({type(exc).__name__}: {exc}). It may be truncated or corrupt; "
            "export it again from the program that wrote it.",
        ) from None


def _measure(data: bytes) -> dict[str, object]:
    from personalize.music.gm import format_programs
    from personalize.music.keys import key_name
    from personalize.music.measure import measure

    pm = _parse(data)
    notes = [(inst.is_drum, n) for inst in pm.instruments for n in inst.notes]
    if not notes or pm.get_end_time() <= 0:
        raise _Refused("midi_no_notes", "the file has no notes (zero length); nothing to measure.")
    if all(is_drum for is_drum, _ in notes):
        raise _Refused(
            "midi_no_pitched_notes",
            "the file holds only drum parts, so it has no key; the catalog needs pitched parts.",
        )
    try:
        features = measure(pm)
    except ValueError as exc:  # e.g. every pitched note has zero length, so there is no key to find
        raise _Refused("midi_no_pitched_notes", f"no key can be found ({exc}).") from None
    # The music lasts until its last note ends; controller resets, markers or an end-of-track event long
    # after it are silence, which would make the track seem longer and its notes sparser than they are.
    music_s = max(n.end for _, n in notes)
    if music_s <= 0:
        raise _Refused("midi_no_notes", "every note ends at time zero; nothing to measure.")
    return {
        "duration_s": float(music_s),
        "tempo_bpm": features.tempo_bpm,
        "key": key_name(features.key_pc, features.mode),
        "meter": features.meter,
        "programs": format_programs(features.programs),
        "density": features.n_notes / float(music_s),
    }


class _Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _serve(conn: Connection, parent: ProcessId) -> None:
    """Worker loop: receive bytes, send back ``("ok", features)`` or ``("refused", reason, detail)``."""
    die_with_parent(parent)
    conn.send(("ready",))
    while True:
        try:
            data = conn.recv()
        except EOFError:
            return
        if data is None:
            return
        try:
            features, said = measure_bytes(data)
            conn.send(("ok", features, said))
        except _Refused as refused:
            conn.send(("refused", refused.reason, refused.detail))
        except Exception as exc:
            conn.send(
                (
                    "refused",
                    "midi_unreadable",
                    f"measuring failed ({type(exc).__name__}: {exc}); the file is probably malformed.",
                )
            )


class MidiMeasurer:
    """A worker process that measures one file at a time; killed and replaced when a file runs too long."""

    def __init__(self, timeout_s: float, max_bytes: int) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._mp = mp.get_context("spawn")  # never fork a process that may hold threads or DB connections
        self._proc: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None

    def _start(self) -> None:
        parent, child = self._mp.Pipe()
        self._proc = self._mp.Process(
            target=_serve, args=(child, this_process()), daemon=True, name="midi-measure"
        )
        self._proc.start()
        child.close()
        self._conn = parent
        if not parent.poll(_WORKER_START_S):
            self.close()
            raise RuntimeError("the MIDI measuring worker did not start; check that pretty_midi imports")
        parent.recv()

    def measure(self, path: Path) -> MidiOutcome:
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                return MidiOutcome(
                    path,
                    reason="midi_too_large",
                    detail=f"{size:,} bytes is over the {self.max_bytes:,}-byte cap "
                    "(PERSONALIZE_MIDI_MAX_BYTES); split the piece or raise the cap.",
                )
            data = path.read_bytes()
        except OSError as exc:
            return MidiOutcome(path, reason="midi_unreadable", detail=f"cannot read the file ({exc}).")
        if self._proc is None or not self._proc.is_alive():
            self._start()
        assert self._conn is not None
        self._conn.send(data)
        if not self._conn.poll(self.timeout_s):
            self.close()
            return MidiOutcome(
                path,
                reason="midi_timeout",
                detail=f"parsing took over {self.timeout_s:g} s (PERSONALIZE_MIDI_PARSE_TIMEOUT_S); "
                "the file is probably malformed or enormous.",
            )
        try:
            message = self._conn.recv()
        except EOFError:
            self.close()
            return MidiOutcome(path, reason="midi_unreadable", detail="the parser crashed on this file.")
        if message[0] == "ok":
            return MidiOutcome(path, features=message[1], warnings=message[2])
        return MidiOutcome(path, reason=message[1], detail=message[2])

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(None)
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            self._proc.join(timeout=1)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=5)
            self._proc = None

    def __enter__(self) -> MidiMeasurer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
