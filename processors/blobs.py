"""Blob storage as processors use it: inputs read and results written only through it, so a
processor on another machine needs nothing but the store (a local folder or a bucket)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class StoredResult(Protocol):
    """A stored result file."""

    def describe(self) -> dict[str, object]: ...


class BlobAccess(Protocol):
    """What a job run needs of blob storage (``infra.blobs.LocalBlobStore``,
    ``infra.s3blobs.S3BlobStore``).

    - ``local_copy(key, folder)`` → a local file holding blob ``key``, for engines whose tools
      need a path: a copy under ``folder`` (the run's work folder, removed after the run) when
      the store is remote, the stored file itself when it is a local folder.
    - ``put_file(source, key)`` stores a result file under ``key`` and describes it
      (``{blob, name, size, content_type, sha256}``).
    """

    def local_copy(self, key: str, folder: Path) -> Path: ...
    def put_file(self, source: Path, key: str, content_type: str | None = None) -> StoredResult: ...
