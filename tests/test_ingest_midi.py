"""MIDI files as they are written in the wild: a tempo map kept on a track after the first, silence after the
last note, parser warnings that must name their file, and the path -> track_id list for event files."""

from __future__ import annotations

import csv
import logging

import mido
import pytest
from sqlalchemy import select

from personalize.db.models import Track
from personalize.ingest import ingest_catalog_midi
from personalize.ingest.midi import midi_track_id

TICKS = 480


def _band_file(path, bpm: float, n_beats: int, silence_beats: int, tempo_track: int) -> None:
    """A type-1 file: a conductor track with only a name, and the tempo, meter and notes on ``tempo_track``;
    a controller reset ``silence_beats`` after the last note, where the track ends."""
    mid = mido.MidiFile(type=1, ticks_per_beat=TICKS)
    conductor = mido.MidiTrack([mido.MetaMessage("track_name", name="Song", time=0)])
    part = mido.MidiTrack([mido.MetaMessage("track_name", name="Piano", time=0)])
    meta = [
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0),
        mido.MetaMessage("time_signature", numerator=3, denominator=4, time=0),
    ]
    (conductor if tempo_track == 0 else part).extend(meta)
    part.append(mido.Message("program_change", program=0, time=0))
    pitches = [60, 64, 67, 72]
    for i in range(n_beats):
        part.append(mido.Message("note_on", note=pitches[i % 4], velocity=90, time=0))
        part.append(mido.Message("note_off", note=pitches[i % 4], velocity=0, time=TICKS))
    part.append(mido.Message("control_change", control=121, value=0, time=silence_beats * TICKS))
    mid.tracks.extend([conductor, part])
    mid.save(path)


def test_tempo_map_from_any_track_and_duration_to_the_last_note(ctx, tmp_path, caplog):
    folder = tmp_path / "midi"
    folder.mkdir()
    _band_file(folder / "Fast Song.mid", bpm=230, n_beats=48, silence_beats=200, tempo_track=1)
    _band_file(folder / "Slow Song.mid", bpm=72, n_beats=24, silence_beats=0, tempo_track=0)
    ids_csv = tmp_path / "ids.csv"
    with caplog.at_level(logging.WARNING, logger="personalize.ingest.catalog"):
        report = ingest_catalog_midi(ctx, folder, ids_csv=ids_csv)
    assert report.ingested == 2, report.examples
    with ctx.sessions() as session:
        tracks = {t.track_id: t for t in session.scalars(select(Track))}
    fast = tracks[midi_track_id(folder.relative_to(folder) / "Fast Song.mid")]
    assert fast.tempo_bpm == pytest.approx(230, abs=0.5)  # not the 120 BPM a track-0-only reader assumes
    assert fast.meter == "3/4"
    music_s = 48 * 60 / 230
    assert fast.duration_s == pytest.approx(music_s, rel=0.01)  # not the 200 silent beats after it
    assert fast.density == pytest.approx(48 / music_s, rel=0.01)
    slow = tracks["midi-slow-song"]
    assert slow.tempo_bpm == pytest.approx(72, abs=0.5) and slow.duration_s == pytest.approx(20.0, rel=0.01)

    # One warning for the file whose tempo map moved, naming it; none for the well-formed one.
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "Fast Song.mid" in warned[0] and "tempo" in warned[0], warned
    assert any("warnings" in note for note in report.notes)

    with ids_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [
        {"path": "Fast Song.mid", "track_id": "midi-fast-song", "outcome": "measured"},
        {"path": "Slow Song.mid", "track_id": "midi-slow-song", "outcome": "measured"},
    ]
