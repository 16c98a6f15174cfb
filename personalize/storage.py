"""Content-addressed artifact storage on a local folder or any fsspec URL (``s3://``, ``memory://``, ...)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import fsspec


@dataclass(frozen=True)
class StoredObject:
    uri: str
    sha256: str
    n_bytes: int


class Storage:
    """Writes bytes under ``<root>/<kind>/<sha256[:2]>/<sha256><suffix>``; the same bytes land once."""

    def __init__(self, root_url: str) -> None:
        self.root_url = root_url.rstrip("/")
        self.fs, self.root_path = fsspec.core.url_to_fs(self.root_url)

    def _uri(self, path: str) -> str:
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return path if protocol in ("file", "local") else f"{protocol}://{path}"

    def put_bytes(self, kind: str, data: bytes, suffix: str) -> StoredObject:
        digest = hashlib.sha256(data).hexdigest()
        path = f"{self.root_path}/{kind}/{digest[:2]}/{digest}{suffix}"
        if not self.fs.exists(path):
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{path}.partial"
            with self.fs.open(tmp, "wb") as fh:
                fh.write(data)
            self.fs.mv(tmp, path)
        return StoredObject(uri=self._uri(path), sha256=digest, n_bytes=len(data))

    def get_bytes(self, uri: str) -> bytes:
        with fsspec.open(uri, "rb") as fh:
            return fh.read()

    def exists(self, uri: str) -> bool:
        fs, path = fsspec.core.url_to_fs(uri)
        return fs.exists(path)

    def delete(self, uri: str) -> int:
        """Remove one stored object; returns the bytes freed (0 when it was already gone)."""
        fs, path = fsspec.core.url_to_fs(uri)
        try:
            n_bytes = int(fs.size(path))
            fs.rm_file(path)
        except FileNotFoundError:
            return 0
        return n_bytes

    def listing(self, kind: str) -> list[tuple[str, int, float]]:
        """Every stored object of ``kind`` as ``(uri, bytes, modified as a POSIX time)``; partial writes
        (``.partial``) are left out."""
        base = f"{self.root_path}/{kind}"
        if not self.fs.exists(base):
            return []
        out = []
        for path, info in self.fs.find(base, detail=True).items():
            if path.endswith(".partial"):
                continue
            modified = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
            if hasattr(modified, "timestamp"):
                modified = modified.timestamp()
            out.append((self._uri(path), int(info.get("size") or 0), float(modified)))
        return out

    def total_bytes(self, kinds: tuple[str, ...] = ("midi", "audio")) -> int:
        """Bytes held under the given kinds."""
        return sum(n for kind in kinds for _, n, _ in self.listing(kind))
