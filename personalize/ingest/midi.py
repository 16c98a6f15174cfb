"""Measure catalog features from MIDI files in a separate worker process with a time limit and a size cap,
so a corrupt, hostile or enormous file is quarantined with a reason instead of crashing or hanging ingest."""

from __future__ import annotations

import contextlib
import hashlib
import io
import multiprocessing as mp
import re
from dataclasses import dataclass
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


def measure_bytes(data: bytes) -> dict[str, object]:
    """Parse and measure one file's bytes; raises ``_Refused`` with a reason code when it cannot be used."""
    import mido
    import pretty_midi

    from personalize.music.gm import format_programs
    from personalize.music.keys import key_name
    from personalize.music.measure import measure

    try:
        pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as first:
        # Some writers put out-of-range data bytes in events; mido can clip them instead of giving up.
        try:
            midi = mido.MidiFile(file=io.BytesIO(data), clip=True)
            pm = pretty_midi.PrettyMIDI(mido_object=midi)
        except Exception:
            raise _Refused(
                "midi_unreadable",
                f"not a readable MIDI file ({type(first).__name__}: {first}). It may be truncated or corrupt; "
                "export it again from the program that wrote it.",
            ) from None
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
    return {
        "duration_s": features.duration_s,
        "tempo_bpm": features.tempo_bpm,
        "key": key_name(features.key_pc, features.mode),
        "meter": features.meter,
        "programs": format_programs(features.programs),
        "density": features.density,
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
            conn.send(("ok", measure_bytes(data)))
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
            return MidiOutcome(path, features=message[1])
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
