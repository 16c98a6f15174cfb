"""Listener and track identifiers: the one rule every stored id keeps, so the API can always serve it.

Ids arrive from files, exports and the app, and come back in URL paths (``/v1/listeners/{id}/playlist``),
percent-encoded by whoever builds the URL and decoded by the API. An id that ingest stored but the API
refused would be a listener nobody can fetch, so both sides apply :func:`id_problem`: any printable text of
at most 64 characters (``L000123``, ``anna+music@example.com``, ``jürgen.müller``, ``O'Brien``,
``user 42``) passes, while a slash or backslash (a path separator even when encoded), control or other
unprintable characters, surrounding spaces and the path segments ``.`` and ``..`` do not. Ids are kept in
Unicode NFC, so ``ü`` typed as one character or as ``u`` plus a combining mark is the same listener.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

ID_MAX_CHARS = 64  # listeners.listener_id, tracks.track_id and listening_events.event_id are String(64)
ID_RULE = (
    "any printable text of at most 64 characters without '/', '\\' or control characters "
    "(spaces only inside, not '.' or '..')"
)
# Characters no id may hold, as an RE2 class (Arrow's regex engine): path separators, control and format
# characters, line and paragraph separators, and every space but the plain one. Python's str.isprintable()
# is the reference (it also refuses unassigned code points, which RE2 cannot name): ingest checks non-ASCII
# ids with it too.
ID_FORBIDDEN_RE2 = r"[\p{C}\p{Zl}\p{Zp}/\\]|[^ \P{Zs}]"


def id_problem(value: str) -> str | None:
    """What is wrong with ``value`` as an id, or None when it is a good one.

    >>> id_problem("anna+music@example.com") is None, id_problem("a/b")
    (True, "holds '/'")
    """
    if not value:
        return "is empty"
    if len(value) > ID_MAX_CHARS:
        return f"is longer than {ID_MAX_CHARS} characters"
    if value != value.strip():
        return "starts or ends with a space"
    if value in (".", ".."):
        return "is a path segment ('.' or '..')"
    for ch in value:
        if ch in "/\\":
            return f"holds {ch!r}"
        if not ch.isprintable():
            return f"holds the unprintable character U+{ord(ch):04X}"
    return None


def normal_id(value: str) -> str:
    """``value`` in Unicode NFC (the form ids are stored in)."""
    return value if value.isascii() else unicodedata.normalize("NFC", value)


def url_id(value: str) -> str:
    """``value`` percent-encoded for one URL path segment or query value (``+``, spaces, ``?`` included)."""
    return quote(value, safe="")


def unservable_id(column: str, value: object) -> str:
    """What to tell the sender of an id outside the rule (a quarantine detail)."""
    text = str(value).strip()
    problem = id_problem(normal_id(text)) or "is not a usable id"
    return f"{column} {text[:80]!r} {problem}: use {ID_RULE}"
