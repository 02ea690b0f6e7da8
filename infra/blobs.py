"""Blob storage on a local folder: uploads streamed in with sha256 and a sniffed content
type, result files copied in, stored names never escaping the root. Folders are created
0700 and files 0600: uploads are the users' data. :func:`infra.blobstores.open_blob_store` picks this store
or object storage (:mod:`infra.s3blobs`) from settings."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import AsyncIterable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import filetype
from starlette.concurrency import run_in_threadpool

from commands.errors import PayloadTooLarge

CHUNK = 1024 * 1024
#: bytes the type is sniffed from (``filetype`` reads at most 8,192)
HEAD = 8192
DIR_MODE, FILE_MODE = 0o700, 0o600


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


class Intake:
    """What an upload stream has shown so far: its size, sha256 and sniffed content type.

    :meth:`take` each chunk as it arrives; :meth:`finish` at the end of the stream. Both
    stores use it, so an upload is measured and typed the same way wherever it goes.

    Args:
        name: the uploaded file's name (for the error message).
        max_bytes: bytes the upload may have.
        accept: called with the content type once the first ``HEAD`` bytes (or the whole
            upload, if shorter) have arrived; whatever it raises aborts the upload.
    """

    def __init__(self, name: str, max_bytes: int, accept: Callable[[str], None] | None) -> None:
        self.name, self.max_bytes, self.accept = name, max_bytes, accept
        self.digest, self.size, self.head, self.content_type = hashlib.sha256(), 0, b"", ""

    def take(self, chunk: bytes) -> None:
        """Count, hash and (until it is known) sniff ``chunk``.

        Raises:
            PayloadTooLarge: the upload passed ``max_bytes`` with this chunk.
        """
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise PayloadTooLarge(f"{safe_name(self.name)} is over the limit of {self.max_bytes} bytes")
        self.digest.update(chunk)
        if not self.content_type:
            self.head += chunk[: HEAD - len(self.head)]
            if len(self.head) >= HEAD:
                self._typed()

    def finish(self, key: str) -> StoredBlob:
        """The stored blob's description once the stream has ended (types a short upload)."""
        if not self.content_type:
            self._typed()
        return StoredBlob(key, safe_name(self.name), self.size, self.digest.hexdigest(), self.content_type)

    def _typed(self) -> None:
        self.content_type = sniff(self.head)
        if self.accept is not None:
            self.accept(self.content_type)


class LocalBlobStore:
    """Blobs under ``root``; keys look like ``uploads/<uuid>/<name>``. Implements
    ``api.deps.BlobStore``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(self.root, DIR_MODE)

    def path(self, key: str) -> Path:
        """The file of ``key``. Raises ValueError if the key would escape the root."""
        p = (self.root / key).resolve()
        if not p.is_relative_to(self.root):
            raise ValueError(f"blob key escapes the storage root: {key!r}")
        return p

    def open(self, key: str) -> BinaryIO:
        """The stored bytes of ``key``, opened for reading. Raises FileNotFoundError, ValueError."""
        return open(self.path(key), "rb")

    def _create(self, key: str) -> BinaryIO:
        """A new file for ``key`` (0600), its folders made 0700 below the root."""
        target = self.path(key)
        folder = self.root
        for part in target.parent.relative_to(self.root).parts:
            folder = folder / part
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=DIR_MODE)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        os.fchmod(fd, FILE_MODE)  # an existing file, or a umask wider than usual
        return os.fdopen(fd, "wb")

    async def save_stream(
        self,
        chunks: AsyncIterable[bytes],
        name: str,
        *,
        max_bytes: int,
        accept: Callable[[str], None] | None = None,
        prefix: str = "uploads",
    ) -> StoredBlob:
        """Stream ``chunks`` into a new blob, hashing as it goes; disk writes run in a
        worker thread, at most ``CHUNK`` bytes buffered in memory.

        ``accept(content_type)`` is called once the first ``HEAD`` bytes (or the whole
        file, if shorter) have arrived and before anything is written; whatever it raises
        aborts the save.

        Raises:
            PayloadTooLarge: more than ``max_bytes`` arrived (raised as the byte over the
                limit arrives). On any error the partial file is removed.
        """
        key = f"{prefix}/{uuid.uuid4()}/{safe_name(name)}"
        intake = Intake(name, max_bytes, accept)
        buffer: list[bytes] = []
        buffered = 0
        out = await run_in_threadpool(self._create, key)
        try:
            async for chunk in chunks:
                intake.take(chunk)
                buffer.append(chunk)
                buffered += len(chunk)
                if buffered >= CHUNK:
                    await run_in_threadpool(out.write, b"".join(buffer))
                    buffer, buffered = [], 0
            stored = intake.finish(key)
            await run_in_threadpool(_finish, out, b"".join(buffer))
        except BaseException:  # also a cancelled request: clean up without awaiting
            out.close()
            self.delete(key)
            raise
        return stored

    def put_file(self, source: Path, key: str, content_type: str | None = None) -> StoredBlob:
        """Copy a local file in under ``key`` (result files)."""
        target = self.path(key)
        with open(source, "rb") as src, self._create(key) as out:
            shutil.copyfileobj(src, out, CHUNK)
        digest = hashlib.sha256()
        with open(target, "rb") as f:
            head = f.read(HEAD)
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

    def local_path(self, key: str) -> Path | None:
        """The file of ``key`` (downloads serve it as a file), None if it is not stored."""
        p = self.path(key)
        return p if p.is_file() else None

    def local_copy(self, key: str, folder: Path) -> Path:
        """A local file with the bytes of ``key``: the stored file itself (engines only read
        their inputs), so ``folder`` is not used."""
        return self.path(key)

    def size(self, key: str) -> int | None:
        """Bytes of blob ``key``, None if it is not stored."""
        p = self.path(key)
        return p.stat().st_size if p.is_file() else None

    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start``..``end`` (inclusive) of blob ``key``, in chunks of at most ``CHUNK``."""
        with self.open(key) as f:
            f.seek(start)
            left = end - start + 1
            while left > 0 and (chunk := f.read(min(CHUNK, left))):
                left -= len(chunk)
                yield chunk

    def sizes(self) -> dict[str, int]:
        """Every stored blob: ``{key: bytes}``."""
        return {p.relative_to(self.root).as_posix(): p.stat().st_size for p in self.root.rglob("*") if p.is_file()}


def _finish(out: BinaryIO, rest: bytes) -> None:
    with out:
        out.write(rest)
