"""API keys for the app backend: created once and shown once, stored only as a SHA-256 hash, revocable.

A key looks like ``pz_<prefix>_<secret>``. The prefix (8 hex characters) is stored in clear so people can
tell keys apart and revoke one; the whole key carries 256 bits of randomness, so a plain SHA-256 of it is
as strong as a slow password hash would be and costs microseconds per request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select, update

from personalize.api.queries import KEY_BY_PREFIX, Call, execute_together
from personalize.context import Context
from personalize.db.models import ApiKey

KEY_RE = re.compile(r"^pz_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
PREFIX_RE = re.compile(r"^(pz_)?[0-9a-f]{8}$")


@dataclass(frozen=True)
class CreatedKey:
    name: str
    prefix: str
    key: str  # the only time the full key exists outside the caller's hands


@dataclass(frozen=True)
class KeyInfo:
    name: str
    prefix: str
    created_at: dt.datetime | None
    revoked_at: dt.datetime | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(ctx: Context, name: str) -> CreatedKey:
    """Make a new key named ``name`` and store its hash; the returned ``key`` is never stored."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("An API key needs a name of 1 to 100 characters (who or what uses it).")
    with ctx.sessions.begin() as session:
        for _ in range(5):  # a prefix collision is a 1-in-4-billion event; retry rather than fail
            prefix = secrets.token_hex(4)
            if session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
                break
        else:
            raise RuntimeError("Could not find an unused key prefix; try again.")
        key = f"pz_{prefix}_{secrets.token_urlsafe(32)}"
        session.add(ApiKey(name=name, prefix=prefix, key_hash=hash_key(key)))
    return CreatedKey(name=name, prefix=prefix, key=key)


def revoke_key(ctx: Context, prefix: str) -> KeyInfo:
    """Revoke the key whose prefix is ``prefix`` (with or without ``pz_``). Revoking twice is harmless."""
    if not PREFIX_RE.match(prefix):
        raise ValueError(f"{prefix!r} is not a key prefix: expected 8 hex characters as `apikey list` shows.")
    prefix = prefix.removeprefix("pz_")
    with ctx.sessions.begin() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
        if row is None:
            raise LookupError(f"No API key with prefix {prefix}: see `personalize apikey list`.")
        if row.revoked_at is None:
            session.execute(
                update(ApiKey).where(ApiKey.id == row.id).values(revoked_at=dt.datetime.now(dt.UTC))
            )
        session.flush()
        session.refresh(row)
        return _info(row)


def list_keys(ctx: Context) -> list[KeyInfo]:
    with ctx.sessions() as session:
        return [_info(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.id))]


def key_lookup(presented: str) -> Call | None:
    """The read that finds the stored key ``presented`` claims to be, or None for a malformed key (nothing
    to read)."""
    m = KEY_RE.match(presented)
    return (KEY_BY_PREFIX, {"prefix": m.group(1)}) if m else None


def verify_key(conn: Connection, presented: str) -> KeyInfo | None:
    """The key's info when ``presented`` is a live (unrevoked) key, else None. Constant-time hash compare."""
    lookup = key_lookup(presented)
    return None if lookup is None else checked_key(execute_together(conn, lookup)[0], presented)


def checked_key(rows: list[Any], presented: str) -> KeyInfo | None:
    """The key's info when the rows of its :func:`key_lookup` show ``presented`` live, else None."""
    row = rows[0] if rows else None
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, hash_key(presented)):
        return None
    return KeyInfo(name=row.name, prefix=row.prefix, created_at=None, revoked_at=None)


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(name=row.name, prefix=row.prefix, created_at=row.created_at, revoked_at=row.revoked_at)
