"""``aiorch blobs migrate``: copy the blobs of a local folder into the configured bucket under
the same keys, so the events' blob keys stay valid when a deployment moves to object storage."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from infra.blobs import CHUNK, LocalBlobStore
from infra.s3blobs import S3BlobStore


@dataclass
class MigrationReport:
    """What a migration did: keys copied and skipped (already there with the same size),
    bytes copied, and keys whose copy differs from the original (``--verify``)."""

    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    copied_bytes: int = 0
    mismatched: list[str] = field(default_factory=list)


def _sha256_local(store: LocalBlobStore, key: str) -> str:
    digest = hashlib.sha256()
    with store.open(key) as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_remote(store: S3BlobStore, key: str, size: int) -> str:
    digest = hashlib.sha256()
    for chunk in store.iter_range(key, 0, size - 1) if size else ():
        digest.update(chunk)
    return digest.hexdigest()


def migrate(
    source: LocalBlobStore,
    target: S3BlobStore,
    *,
    verify: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> MigrationReport:
    """Copy every blob of ``source`` into ``target`` under the same key, skipping keys the
    target already holds with the same size (so a rerun resumes an interrupted one).
    ``progress(key, bytes)`` is called after each blob. With ``verify``, every blob's sha256
    is compared with its copy's (read back from the target)."""
    report = MigrationReport()
    present = target.sizes()
    for key, size in sorted(source.sizes().items()):
        if present.get(key) == size:
            report.skipped.append(key)
        else:
            target.upload(source.path(key), key)
            report.copied.append(key)
            report.copied_bytes += size
        if verify and _sha256_local(source, key) != _sha256_remote(target, key, size):
            report.mismatched.append(key)
        if progress is not None:
            progress(key, size)
    return report
