"""Blob storage on a local folder: uploads streamed in with sha256 and a sniffed content
type, result files copied in, stored names never escaping the root."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import filetype

from commands.errors import PayloadTooLarge

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredBlob:
    """A stored file: ``key`` under the root, ``size`` bytes, ``sha256`` hex, sniffed type."""

    key: str
    name: str
    size: int
    sha256: str
    content_type: str

    def describe(self) -> dict[str, object]:
        """``{blob, name, size, content_type, sha256}`` as recorded in events."""
        return {"blob": self.key, "name": self.name, "size": self.size, "content_type": self.content_type, "sha256": self.sha256}


def sniff(head: bytes, fallback: str = "application/octet-stream") -> str:
    """The MIME type of a file from its first bytes (``filetype``), else ``fallback``."""
    kind = filetype.guess(head)
    if kind is None:
        return fallback
    mime = str(kind.mime)
    return {"audio/x-wav": "audio/wav", "audio/wave": "audio/wav"}.get(mime, mime)


def safe_name(name: str) -> str:
    """A file name with no folders and no odd characters (at most 200 characters)."""
    base = os.path.basename(name.replace("\\", "/")) or "file"
    cleaned = "".join(c if c.isalnum() or c in "._- " else "_" for c in base).strip(" .") or "file"
    return cleaned[:200]


class LocalBlobStore:
    """Blobs under ``root``; keys look like ``uploads/<uuid>/<name>``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The file of ``key``. Raises ValueError if the key would escape the root."""
        p = (self.root / key).resolve()
        if not p.is_relative_to(self.root):
            raise ValueError(f"blob key escapes the storage root: {key!r}")
        return p

    def save_stream(self, chunks: Iterable[bytes], name: str, *, max_bytes: int, prefix: str = "uploads") -> StoredBlob:
        """Stream ``chunks`` into a new blob, hashing as it goes.

        Raises:
            PayloadTooLarge: more than ``max_bytes`` arrived (the partial file is removed).
        """
        key = f"{prefix}/{uuid.uuid4()}/{safe_name(name)}"
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, size, head = hashlib.sha256(), 0, b""
        try:
            with open(target, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(f"{name} is over the limit of {max_bytes} bytes")
                    if len(head) < 8192:
                        head += chunk[: 8192 - len(head)]
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            self.delete(key)
            raise
        return StoredBlob(key, safe_name(name), size, digest.hexdigest(), sniff(head))

    def put_file(self, source: Path, key: str, content_type: str | None = None) -> StoredBlob:
        """Copy a local file in under ``key`` (result files)."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        digest = hashlib.sha256()
        with open(target, "rb") as f:
            head = f.read(8192)
            digest.update(head)
            for chunk in iter(lambda: f.read(CHUNK), b""):
                digest.update(chunk)
        ctype = content_type or sniff(
            head, "text/plain" if source.suffix in (".txt", ".srt", ".vtt") else "application/octet-stream"
        )
        return StoredBlob(key, target.name, target.stat().st_size, digest.hexdigest(), ctype)

    def delete(self, key: str) -> None:
        """Remove a blob (and its now-empty folder) if present."""
        p = self.path(key)
        p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            p.parent.rmdir()
