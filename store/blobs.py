"""Content-addressed blob store: a local directory by default.

Ids are the sha256 of the bytes, so an upload is stored once however often it
comes. Writes go to a temporary file then ``os.replace``: a reader never sees half
a blob, and a crashed writer leaves no blob behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

_ID = re.compile(r"^[0-9a-f]{64}$")


def content_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_content_id(value: str) -> bool:
    return bool(_ID.match(value))


class BlobStore(Protocol):
    def put(self, data: bytes) -> str: ...
    def get(self, blob_id: str) -> bytes: ...
    def exists(self, blob_id: str) -> bool: ...
    def delete(self, blob_id: str) -> None: ...
    def touch(self, blob_id: str) -> None: ...


class LocalBlobStore:
    """Blobs under ``root/ab/abcdef...`` (two-character fan-out keeps folders small)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, blob_id: str) -> Path:
        if not is_content_id(blob_id):
            raise KeyError(f"not a content id: {blob_id!r}")
        return self.root / blob_id[:2] / blob_id

    def put(self, data: bytes) -> str:
        blob_id = content_id(data)
        path = self._path(blob_id)
        if path.exists():
            self.touch(blob_id)  # uploaded again: wanted again (see store.retention)
            return blob_id
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return blob_id

    def get(self, blob_id: str) -> bytes:
        try:
            return self._path(blob_id).read_bytes()
        except FileNotFoundError as exc:
            raise KeyError(blob_id) from exc

    def exists(self, blob_id: str) -> bool:
        try:
            return self._path(blob_id).is_file()
        except KeyError:
            return False

    def delete(self, blob_id: str) -> None:
        self._path(blob_id).unlink(missing_ok=True)

    def touch(self, blob_id: str) -> None:
        """Mark a blob as just named by a request; retention counts its age from here."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self._path(blob_id))
