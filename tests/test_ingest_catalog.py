"""The catalog in: from CSV/Parquet with every catalog quarantine reason, and measured from a folder of MIDI
files written by different tools, where unusable files are quarantined, never crash and never hang."""

from __future__ import annotations

import json
from pathlib import Path

import mido
import pretty_midi
from sqlalchemy import func, select

from personalize.db.models import QuarantinedRow, Track
from personalize.ingest import ingest_catalog, ingest_catalog_midi
from personalize.ingest.midi import midi_track_id

CATALOG_CSV = """track_id,title,duration_s,tempo_bpm,key,meter,programs,density
t1,One,180,120,D minor,3/4,0;33;drums,3.5
t2,"Two, with a comma",200.5,90,F# major,6/8,40,
t3,Three,abc,90,F# major,4/4,0,
t4,Four,100,90,H major,4/4,0,
t5,Five,100,5000,C,4/4,0,
t1,Again,100,90,C,4/4,0,
t6,,100,90,C,4/4,0,
t7,Seven,100,90,C,4/4,0;200,
t8,Eight,100,90,C,7/5,0,
"""


def test_catalog_file_reasons_and_reingest(ctx, tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text(CATALOG_CSV)
    report = ingest_catalog(ctx, path)

    assert (report.rows_read, report.ingested) == (9, 2)
    assert report.quarantined == {
        "unparseable_field": 4,
        "out_of_range": 1,
        "duplicate_track_id": 1,
        "missing_field": 1,
    }
    with ctx.sessions() as session:
        t1, t2 = session.get(Track, "t1"), session.get(Track, "t2")
        reasons = {q.row_number: q.reason for q in session.scalars(select(QuarantinedRow))}
    assert (t1.key_pc, t1.mode, t1.meter, t1.programs, t1.density) == (2, "minor", "3/4", "0;33;drums", 3.5)
    assert (t2.title, t2.key_pc, t2.mode, t2.density, t2.source) == (
        "Two, with a comma",
        6,
        "major",
        None,
        "catalog",
    )
    assert reasons == {3: "unparseable_field", 4: "unparseable_field", 5: "out_of_range", 6: "duplicate_track_id",
                       7: "missing_field", 8: "unparseable_field", 9: "unparseable_field"}  # fmt: skip

    again = ingest_catalog(ctx, path)
    assert (again.ingested, again.already_present, again.quarantined) == (0, 2, report.quarantined)
    with ctx.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(QuarantinedRow)).scalar_one() == 7


def _pretty_midi_piece(path: Path, tempo_bpm: float, program: int, pitches: list[int], meter=(3, 4)) -> None:
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo_bpm)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(meter[0], meter[1], 0.0))
    inst = pretty_midi.Instrument(program=program)
    beat_s = 60.0 / tempo_bpm
    for i, pitch in enumerate(pitches * 4):
        inst.notes.append(
            pretty_midi.Note(velocity=90, pitch=pitch, start=i * beat_s, end=(i + 0.9) * beat_s)
        )
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes.append(pretty_midi.Note(velocity=90, pitch=36, start=0.0, end=0.1))
    pm.instruments += [inst, drums]
    pm.write(str(path))


def _music21_piece(path: Path) -> None:
    from music21 import meter, note, stream, tempo

    part = stream.Part()
    part.append(tempo.MetronomeMark(number=100))
    part.append(meter.TimeSignature("4/4"))
    for name in ["D4", "F4", "A4", "D5", "A4", "F4", "E4", "C#4", "D4", "A3", "D4", "F4"] * 2:
        part.append(note.Note(name, quarterLength=1))
    score = stream.Score([part])
    score.write("midi", fp=str(path))


def _mido_piece(path: Path, midi_type: int, with_tempo: bool) -> None:
    """A file written with mido directly: type 0 (one track) or type 1 (tempo track + note track)."""
    mid = mido.MidiFile(type=midi_type, ticks_per_beat=480)
    notes = mido.MidiTrack()
    notes.append(mido.Message("program_change", program=24, time=0))
    for pitch in [67, 71, 74, 79, 74, 71] * 3:  # G major
        notes.append(mido.Message("note_on", note=pitch, velocity=80, time=0))
        notes.append(mido.Message("note_off", note=pitch, velocity=0, time=480))
    if midi_type == 0:
        if with_tempo:
            notes.insert(0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(140), time=0))
        mid.tracks.append(notes)
    else:
        meta = mido.MidiTrack()
        if with_tempo:
            meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(140), time=0))
        mid.tracks += [meta, notes]
    mid.save(str(path))


def _drums_only(path: Path) -> None:
    pm = pretty_midi.PrettyMIDI()
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes += [
        pretty_midi.Note(velocity=100, pitch=38, start=i * 0.5, end=i * 0.5 + 0.1) for i in range(8)
    ]
    pm.instruments.append(drums)
    pm.write(str(path))


def _empty(path: Path) -> None:
    mid = mido.MidiFile(type=1)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("track_name", name="nothing", time=0)]))
    mid.save(str(path))


def test_catalog_from_midi_folder(ctx, tmp_path):
    folder = tmp_path / "midi"
    (folder / "Sub Dir").mkdir(parents=True)
    _pretty_midi_piece(folder / "waltz.mid", 90.0, 0, [60, 64, 67, 72, 67, 64])  # C major, 3/4
    _music21_piece(folder / "Sub Dir" / "d minor tune.mid")
    _mido_piece(folder / "type0.mid", 0, with_tempo=True)
    _mido_piece(folder / "type1_no_tempo.midi", 1, with_tempo=False)
    _drums_only(folder / "drums.mid")
    _empty(folder / "empty.mid")
    good = (folder / "waltz.mid").read_bytes()
    (folder / "truncated.mid").write_bytes(good[: len(good) // 2])
    (folder / "garbage.mid").write_bytes(b"this is not a MIDI file at all " * 20)
    big = bytearray(good)
    (folder / "huge.mid").write_bytes(bytes(big) + b"\x00" * 20_000)
    ctx.settings.midi_max_bytes = 10_000

    report = ingest_catalog_midi(ctx, folder)

    assert report.rows_read == 9
    assert report.ingested == 4
    assert report.quarantined == {
        "midi_no_pitched_notes": 1,
        "midi_no_notes": 1,
        "midi_unreadable": 2,
        "midi_too_large": 1,
    }
    with ctx.sessions() as session:
        tracks = {t.track_id: t for t in session.scalars(select(Track))}
        quarantined = {json.loads(q.raw)["file"]: q for q in session.scalars(select(QuarantinedRow))}
    assert set(tracks) == {"midi-waltz", "midi-sub-dir-d-minor-tune", "midi-type0", "midi-type1-no-tempo"}
    waltz = tracks["midi-waltz"]
    assert (waltz.key_pc, waltz.mode, waltz.meter) == (0, "major", "3/4")
    assert abs(waltz.tempo_bpm - 90.0) < 0.5
    assert waltz.programs == "0;drums"
    assert waltz.density > 0 and waltz.duration_s > 10
    assert waltz.midi_uri and ctx.storage.exists(waltz.midi_uri)
    assert tracks["midi-sub-dir-d-minor-tune"].mode == "minor"
    assert abs(tracks["midi-type0"].tempo_bpm - 140.0) < 0.5
    assert tracks["midi-type0"].key_pc == 7 and tracks["midi-type0"].programs == "24"
    assert abs(tracks["midi-type1-no-tempo"].tempo_bpm - 120.0) < 0.5  # MIDI's default without a tempo
    assert quarantined["truncated.mid"].reason == "midi_unreadable"
    assert quarantined["garbage.mid"].reason == "midi_unreadable"
    assert quarantined["drums.mid"].reason == "midi_no_pitched_notes"
    assert "cap" in quarantined["huge.mid"].detail

    again = ingest_catalog_midi(ctx, folder)
    assert (again.ingested, again.already_present, again.quarantined) == (0, 4, report.quarantined)


def test_slow_midi_file_times_out_and_the_run_goes_on(ctx, tmp_path):
    folder = tmp_path / "midi"
    folder.mkdir()
    _pretty_midi_piece(folder / "a.mid", 120.0, 0, [60, 62, 64])
    ctx.settings.midi_parse_timeout_s = 0.0001  # every parse is "too slow": the worker is killed each time
    report = ingest_catalog_midi(ctx, folder)
    assert report.quarantined == {"midi_timeout": 1}
    assert report.ingested == 0


def test_midi_track_ids_are_stable_slugs():
    assert midi_track_id(Path("Bach/BWV 66.6.mid")) == "midi-bach-bwv-66-6"
    long_id = midi_track_id(Path("a" * 100 + ".mid"))
    assert len(long_id) <= 64 and long_id == midi_track_id(Path("a" * 100 + ".mid"))
    assert long_id != midi_track_id(Path("a" * 101 + ".mid"))
