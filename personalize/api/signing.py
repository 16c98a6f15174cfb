"""Signed, expiring URLs: HMAC-SHA256 over ``purpose|listener|track|expiry`` with a server secret.

Audio URLs are bound to one listener and one track; player links to one listener. The secret comes from
``PERSONALIZE_SIGNING_SECRET``, or is generated once into ``<data_dir>/signing_secret`` so every worker and
every restart of one installation shares it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from personalize.config import Settings
from personalize.ids import url_id

SECRET_FILE = "signing_secret"


def load_signing_secret(settings: Settings) -> bytes:
    """The configured secret, else the persisted one, else a new one written atomically (0600)."""
    if settings.signing_secret:
        if len(settings.signing_secret) < 16:
            raise ValueError("PERSONALIZE_SIGNING_SECRET is too short: use at least 16 random characters.")
        return settings.signing_secret.encode("utf-8")
    path = Path(settings.data_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: when several workers start at once exactly one writes; the others read its secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            text = path.read_text().strip()
            if text:
                return text.encode("utf-8")
            time.sleep(0.02)
        raise RuntimeError(
            f"{path} is empty: delete it and restart to generate a new signing secret."
        ) from None
    with os.fdopen(fd, "w") as fh:
        text = secrets.token_hex(32)
        fh.write(text + "\n")
    return text.encode("utf-8")


@dataclass(frozen=True)
class Signer:
    secret: bytes

    def signature(self, purpose: str, listener_id: str, track_id: str, expires: int) -> str:
        message = f"{purpose}|{listener_id}|{track_id}|{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def check(self, purpose: str, listener_id: str, track_id: str, expires: int, sig: str) -> str | None:
        """None when ``sig`` is valid and unexpired, else the refusal code (``expired`` or ``bad_signature``)."""
        expected = self.signature(purpose, listener_id, track_id, expires)
        if not hmac.compare_digest(expected, sig):
            return "bad_signature"
        if expires < int(time.time()):
            return "expired"
        return None

    def audio_query(self, listener_id: str, track_id: str, ttl_s: int, *, now: float) -> str:
        expires = int(now) + ttl_s
        sig = self.signature("audio", listener_id, track_id, expires)
        return f"listener={url_id(listener_id)}&expires={expires}&sig={sig}"

    def player_query(self, listener_id: str, ttl_s: int, *, now: float) -> str:
        expires = int(now) + ttl_s
        sig = self.signature("player", listener_id, "", expires)
        return f"expires={expires}&sig={sig}"
