"""Why a track could not be rendered: a short reason code plus a sentence saying what was wrong and what to do."""

from __future__ import annotations

# Reason codes (stored in quarantined_rows.reason and in RenderOutcome.reason).
CORRUPT_MIDI = "corrupt_midi"
NO_NOTES = "no_notes"
SILENT = "silent_render"
TOO_SHORT = "too_short"
TIMEOUT = "render_timeout"
MIDI_MISSING = "midi_missing"
WORKER_CRASHED = "worker_crashed"
ENCODE_FAILED = "encode_failed"
TOO_MANY_PARTS = "too_many_parts"


class RenderRejected(Exception):
    """A track that cannot become audio. ``reason`` is a short code, ``detail`` says what to do about it."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
