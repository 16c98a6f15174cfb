"""What a protected route declares to be let in, as types: ``KeyedDb`` (the database, read on behalf of a
live API key), ``SignedAudio`` (a valid signed audio URL) or ``PlayerListener`` (a valid player link). The
check is part of the route's signature, so a route cannot forget it, and a refusal reads nothing.

The API key is checked inside each unit of database work, on the connection that work reads from, rather
than in a step of its own before the handler: a separate step costs a second pool checkout (and with
``api_db_threads`` a second thread hop) and, measured in-process one request at a time before the API's
reads moved onto their own autocommit engine, took a playlist read from 0.83 to 1.15 ms on PostgreSQL and
from 0.16 to 0.18 ms on SQLite. So a refused key
reads nothing, and validation errors (422) still come before key errors (401), as they always have. The
checks that need no database (signed URLs) run before the handler. A route serving key holders reads only
through ``KeyedDb``; ``ApiState.db`` is for the routes that need no key or have checked a signed URL.

Dependencies are ``async`` (FastAPI would run a plain ``def`` one in a worker thread, and the hop costs
more than the check). Handlers reach the process state through ``ApiState.of(request)`` rather than one more
dependency: each costs FastAPI a resolution pass per request (about 4.5 us).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Query, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import AfterValidator
from sqlalchemy import Connection

from personalize.api.errors import Forbidden, NotAuthenticated
from personalize.api.keys import KeyInfo, checked_key, key_lookup, verify_key
from personalize.api.queries import Call, keyed_read
from personalize.api.state import ApiState
from personalize.ids import ID_MAX_CHARS, ID_RULE, id_problem, normal_id

T = TypeVar("T")

API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="An app-backend key from `personalize apikey create NAME`.",
)
KEY_CHALLENGE = {"WWW-Authenticate": "ApiKey"}
SIG_PATTERN = r"^[0-9a-f]{64}$"
EXPIRES_MAX = 2**40  # far beyond any real expiry; keeps the number a plain 64-bit integer


def checked_id(value: str) -> str:
    """An id from a URL (already percent-decoded) under the rule ingest keeps, in the NFC form ids are
    stored in; a path-like, unprintable or over-long one is refused (422)."""
    value = normal_id(value)
    problem = id_problem(value)
    if problem is not None:
        raise ValueError(f"the id {problem}; ids are {ID_RULE}")
    return value


# The rule ingest keeps, so every stored id can be fetched (percent-encoded: '+', spaces, non-ASCII letters)
# and none can look like a path (no slash, backslash, control character, '.' or '..').
# The schema names the rule as a format of its own ("id"): a regex engine cannot say "printable".
ID_SCHEMA = {"format": "id", "maxLength": ID_MAX_CHARS}
ListenerId = Annotated[
    str, Path(description=f"Listener id: {ID_RULE}", json_schema_extra=ID_SCHEMA), AfterValidator(checked_id)
]
TrackId = Annotated[
    str, Path(description=f"Track id: {ID_RULE}", json_schema_extra=ID_SCHEMA), AfterValidator(checked_id)
]
OptionalListenerId = Annotated[str | None, AfterValidator(lambda v: None if v is None else checked_id(v))]
Expires = Annotated[int | None, Query(ge=0, le=EXPIRES_MAX, description="Unix time the URL expires")]
Signature = Annotated[str | None, Query(pattern=SIG_PATTERN, description="HMAC-SHA256, hex")]


def _presented(presented: str | None) -> str:
    if not presented:
        raise NotAuthenticated(
            "missing_api_key",
            "Send your API key in the X-API-Key header (create one with `personalize apikey create NAME`).",
            headers=KEY_CHALLENGE,
        )
    return presented


def _unknown_key() -> NotAuthenticated:
    return NotAuthenticated(
        "invalid_api_key",
        "This API key is unknown or revoked: ask for a new one (`personalize apikey create NAME`).",
        headers=KEY_CHALLENGE,
    )


def _known(key: KeyInfo | None) -> KeyInfo:
    if key is None:
        raise _unknown_key()
    return key


@dataclass(frozen=True)
class KeyedDatabase:
    """The database as the holder of the presented API key may read it: every ``read`` first verifies
    the key on its own connection and refuses (401) a missing, unknown or revoked one, then (429) a key over
    its rate (``KeyRateLimit``)."""

    state: ApiState
    presented: str | None

    async def read(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` once the key checks out, on the same connection (see ``ApiState.db``)."""

        def checked(conn: Connection) -> T:
            self._admitted(conn)
            return work(conn)

        return await self.state.db(checked)

    async def read_with(self, first: Call, work: Callable[[Connection, list[Any]], T]) -> T:
        """``work(conn, rows)`` once the key checks out, where ``rows`` are those of the read ``first``: it
        goes to the database with the key lookup, as one statement on PostgreSQL (the playlist fetch, the
        endpoint the app calls most, makes one round trip rather than two; ``queries.keyed_read``). A
        refused key never gets them: they are dropped with the refusal."""

        def checked(conn: Connection) -> T:
            presented = _presented(self.presented)
            lookup = key_lookup(presented)
            if lookup is None:  # malformed: nothing to look up, nothing read
                raise _unknown_key()
            key_rows, rows = keyed_read(conn, lookup, first)
            self._rate_checked(_known(checked_key(key_rows, presented)))
            return work(conn, rows)

        return await self.state.db(checked)

    async def key(self) -> KeyInfo:
        """The verified key itself, for a handler that needs it rather than a read (event intake)."""
        return await self.state.db(self._admitted)

    def _admitted(self, conn: Connection) -> KeyInfo:
        return self._rate_checked(_known(verify_key(conn, _presented(self.presented))))

    def _rate_checked(self, key: KeyInfo) -> KeyInfo:
        self.state.key_rate.admit(key.prefix)  # 429 once the key is over its rate
        return key


async def keyed_db(
    request: Request, presented: Annotated[str | None, Security(API_KEY_HEADER)]
) -> KeyedDatabase:
    return KeyedDatabase(ApiState.of(request), presented)


KeyedDb = Annotated[KeyedDatabase, Depends(keyed_db)]


@dataclass(frozen=True)
class AudioGrant:
    """What a valid signed audio URL grants: one listener may fetch one track's audio."""

    listener_id: str
    track_id: str


async def check_audio_url(
    request: Request,
    track_id: TrackId,
    listener: Annotated[
        OptionalListenerId, Query(description="Listener the URL was signed for", json_schema_extra=ID_SCHEMA)
    ] = None,
    expires: Expires = None,
    sig: Signature = None,
) -> AudioGrant:
    """The grant of a signed audio URL from a playlist response; refuses a missing, tampered or expired one."""
    if listener is None or expires is None or sig is None:
        raise NotAuthenticated(
            "signature_required", "Audio is served only through the signed URL a playlist response gives."
        )
    refusal = ApiState.of(request).signer.check("audio", listener, track_id, expires, sig)
    if refusal == "expired":
        raise Forbidden(
            "url_expired", "This audio URL has expired: fetch the playlist again for a fresh one."
        )
    if refusal is not None:
        raise Forbidden("bad_signature", "This audio URL is not valid for this listener and track.")
    return AudioGrant(listener_id=listener, track_id=track_id)


SignedAudio = Annotated[AudioGrant, Depends(check_audio_url)]


async def check_player_link(
    request: Request, listener_id: ListenerId, expires: Expires = None, sig: Signature = None
) -> str:
    """The listener of a signed player link from POST /player-link; refuses a missing, tampered or expired one."""
    if expires is None or sig is None:
        raise NotAuthenticated("signature_required", "Open the player through a link from POST /player-link.")
    refusal = ApiState.of(request).signer.check("player", listener_id, "", expires, sig)
    if refusal == "expired":
        raise Forbidden("url_expired", "This player link has expired: ask the app for a new one.")
    if refusal is not None:
        raise Forbidden("bad_signature", "This player link is not valid for this listener.")
    return listener_id


PlayerListener = Annotated[str, Depends(check_player_link)]
