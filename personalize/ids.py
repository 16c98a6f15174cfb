"""Listener and track identifiers: the one alphabet every stored id keeps, so the API can always serve it.

Ids arrive from files and from the app, and come back in URL paths (``/v1/listeners/{id}/playlist``). An id
that ingest stored but the API refused would be a listener nobody can fetch, so both sides check the same
pattern: common id schemes pass (``L000123``, ``user:42``, ``ana@example.com``, ``isrc.USRC17607839``),
while anything path-like, blank or with spaces, slashes, percent signs or control characters does not.
"""

from __future__ import annotations

ID_MAX_CHARS = 64  # listeners.listener_id, tracks.track_id and listening_events.event_id are String(64)
ID_BODY = r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}"
ID_PATTERN = rf"^{ID_BODY}$"
ID_RULE = "letters, digits and . _ : @ - (starting with a letter or digit), at most 64 characters"


def unservable_id(column: str, value: object) -> str:
    """What to tell the sender of an id outside the alphabet (a quarantine detail)."""
    return f"{column} {str(value).strip()!r} has characters the app could not fetch it by: use {ID_RULE}"
