"""A generated track row for render tests: its MIDI stored, everything else a plain default."""

from __future__ import annotations

import datetime as dt

from personalize.db.models import Track


def fresh_track(ctx, track_id: str, midi: bytes | None, run_date: dt.date | None, **overrides) -> Track:
    """A ``generated`` track of ``run_date`` (cluster 1) with ``midi`` stored (None: no MIDI at all)."""
    midi_uri = ctx.storage.put_bytes("midi", midi, ".mid").uri if midi is not None else None
    fields = dict(
        track_id=track_id,
        title=f"Fresh {track_id}",
        source="generated",
        duration_s=8.0,
        tempo_bpm=110.0,
        key_pc=0,
        mode="major",
        meter="4/4",
        programs="0;33;drums",
        run_date=run_date,
        cluster_id=1,
        model_version="test",
        conditioning={"key": "C major", "tempo_bpm": 110, "programs": [0, 33, "drums"]},
        midi_uri=midi_uri,
    )
    fields.update(overrides)
    return Track(**fields)
