"""Which blob store a deployment uses (kept apart from both stores, so neither imports the
other)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infra.blobs import LocalBlobStore

if TYPE_CHECKING:
    from infra.s3blobs import S3BlobStore
    from infra.settings import Settings


def open_blob_store(settings: Settings) -> LocalBlobStore | S3BlobStore:
    """The blob store the settings name: ``AIORCH_BLOB_URL=s3://bucket/prefix`` → object
    storage (the ``AWS_*`` environment configures the client), else the local folder
    ``AIORCH_BLOB_DIR``. Raises ValueError for a blob URL that is not ``s3://``."""
    if settings.blob_url:
        from infra.s3blobs import S3BlobStore, parse_blob_url

        bucket, prefix = parse_blob_url(settings.blob_url)
        return S3BlobStore(bucket, prefix)
    return LocalBlobStore(settings.resolved_blob_dir)
