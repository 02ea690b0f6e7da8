"""Blob storage on S3-compatible object storage (AWS S3, MinIO, …) through boto3.

``AIORCH_BLOB_URL=s3://bucket/prefix`` selects it; the endpoint, region and credentials come
from the standard ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` (boto3 reads them). Keys are the local store's
(``uploads/<uuid>/<name>``, ``results/<job>/<attempt>/<name>``) under the prefix, so the
blobs of a local folder move into a bucket unchanged (``aiorch blobs migrate``).

Uploads stream in: bytes are held until a part of ``PART`` bytes (8 MiB) is full, that part is
sent (one at a time, so an upload holds about one part in memory), and a file smaller than one
part is a single ``PutObject``. Passing the limit, a refused type or a dropped request aborts
the multipart upload: nothing is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterable, Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from starlette.concurrency import run_in_threadpool

from infra.blobs import CHUNK, HEAD, Intake, StoredBlob, safe_name, sniff

log = logging.getLogger(__name__)

#: multipart part size (S3 wants ≥ 5 MiB for every part but the last)
PART = 8 * 1024 * 1024


def s3_client() -> Any:
    """A boto3 S3 client configured by the standard ``AWS_*`` environment (path-style
    addressing when ``AWS_ENDPOINT_URL`` names a server of your own, as MinIO wants)."""
    import boto3
    from botocore.config import Config

    custom = bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 5, "mode": "standard"},
        s3={"addressing_style": "path"} if custom else {},
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client("s3", region_name=region, config=config)


def parse_blob_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix without slashes at either end).

    Raises ValueError for another scheme or no bucket."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"AIORCH_BLOB_URL must look like s3://bucket/prefix, not {url!r}")
    return parts.netloc, parts.path.strip("/")


class S3BlobStore:
    """Blobs in ``bucket`` under ``prefix``; the same methods as
    :class:`infra.blobs.LocalBlobStore` (``api.deps.BlobStore``, ``processors.blobs.BlobAccess``)."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = client if client is not None else s3_client()

    def __repr__(self) -> str:
        return f"S3BlobStore(s3://{self.bucket}/{self.prefix})"

    def object_key(self, key: str) -> str:
        """The object key of blob ``key``. Raises ValueError for a key with ``..`` parts."""
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/")):
            raise ValueError(f"not a blob key: {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    # -- uploads ------------------------------------------------------------------------------

    async def save_stream(
        self,
        chunks: AsyncIterable[bytes],
        name: str,
        *,
        max_bytes: int,
        accept: Callable[[str], None] | None = None,
        prefix: str = "uploads",
    ) -> StoredBlob:
        """Stream ``chunks`` into a new object, hashing as it goes (see the module's
        docstring for memory). ``accept(content_type)`` is called once the first ``HEAD``
        bytes have arrived, before anything is sent; whatever it raises aborts the save.

        Raises:
            PayloadTooLarge: more than ``max_bytes`` arrived (raised as the byte over the
                limit arrives). On any error the multipart upload is aborted.
        """
        key = f"{prefix}/{uuid.uuid4()}/{safe_name(name)}"
        obj = self.object_key(key)
        intake = Intake(name, max_bytes, accept)
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                intake.take(chunk)
                buffer += chunk
                while len(buffer) >= PART:
                    if upload_id is None:
                        upload_id = await run_in_threadpool(self._begin, obj, intake.content_type)
                    with memoryview(buffer) as view:
                        part = bytes(view[:PART])
                    del buffer[:PART]
                    parts.append(await run_in_threadpool(self._part, obj, upload_id, len(parts) + 1, part))
                    del part
            stored = intake.finish(key)
            if upload_id is None:
                await run_in_threadpool(self._put, obj, bytes(buffer), stored.content_type)
            else:
                if buffer or not parts:
                    parts.append(await run_in_threadpool(self._part, obj, upload_id, len(parts) + 1, bytes(buffer)))
                await run_in_threadpool(self._complete, obj, upload_id, parts)
        except BaseException:  # also a cancelled request: the abort runs to its end regardless
            if upload_id is not None:
                cleanup = asyncio.ensure_future(asyncio.to_thread(self._abort, obj, upload_id))
                with contextlib.suppress(asyncio.CancelledError):  # cancelled again: it ends in its thread
                    await asyncio.shield(cleanup)
            raise
        return stored

    def _begin(self, obj: str, ctype: str) -> str:
        answer = self.client.create_multipart_upload(Bucket=self.bucket, Key=obj, ContentType=ctype or "application/octet-stream")
        return str(answer["UploadId"])

    def _part(self, obj: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        answer = self.client.upload_part(Bucket=self.bucket, Key=obj, UploadId=upload_id, PartNumber=number, Body=data)
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _complete(self, obj: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        self.client.complete_multipart_upload(Bucket=self.bucket, Key=obj, UploadId=upload_id, MultipartUpload={"Parts": parts})

    def _abort(self, obj: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=obj, UploadId=upload_id)
        except Exception:  # the store is unreachable: its lifecycle rule ends the upload later
            log.warning("aborting the multipart upload of %s failed", obj, exc_info=True)

    def _put(self, obj: str, data: bytes, ctype: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=obj, Body=data, ContentType=ctype or "application/octet-stream")

    def upload(self, source: Path, key: str, content_type: str | None = None) -> None:
        """Send a local file as blob ``key`` (multipart of ``PART`` bytes when large)."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=2)
        extra = {"ContentType": content_type} if content_type else None
        self.client.upload_file(str(source), self.bucket, self.object_key(key), ExtraArgs=extra, Config=config)

    def put_file(self, source: Path, key: str, content_type: str | None = None) -> StoredBlob:
        """Copy a local file in under ``key`` (result files); its type sniffed unless given."""
        digest, size = hashlib.sha256(), 0
        with open(source, "rb") as f:
            head = f.read(HEAD)
            digest.update(head)
            size += len(head)
            for chunk in iter(lambda: f.read(CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
        ctype = content_type or sniff(
            head, "text/plain" if source.suffix in (".txt", ".srt", ".vtt") else "application/octet-stream"
        )
        self.upload(source, key, ctype)
        return StoredBlob(key, Path(key).name, size, digest.hexdigest(), ctype)

    # -- reads --------------------------------------------------------------------------------

    def size(self, key: str) -> int | None:
        """Bytes of blob ``key``, None if it is not stored."""
        from botocore.exceptions import ClientError

        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))["ContentLength"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start``..``end`` (inclusive) of blob ``key``, in chunks of at most ``CHUNK``."""
        body = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key), Range=f"bytes={start}-{end}")["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def open(self, key: str) -> BinaryIO:
        """The stored bytes of ``key`` as a stream. Raises FileNotFoundError if absent."""
        from botocore.exceptions import ClientError

        try:
            return cast(BinaryIO, self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))["Body"])
        except ClientError as exc:
            raise FileNotFoundError(key) from exc

    def local_path(self, key: str) -> Path | None:
        """None: an object has no local file (downloads stream through :meth:`iter_range`)."""
        return None

    def local_copy(self, key: str, folder: Path) -> Path:
        """A local copy of blob ``key`` in a new folder under ``folder`` (the caller removes
        ``folder``), for engines whose tools need a path."""
        target = folder / uuid.uuid4().hex / Path(key).name
        target.parent.mkdir(parents=True, mode=0o700)
        self.client.download_file(self.bucket, self.object_key(key), str(target))
        return target

    def delete(self, key: str) -> None:
        """Remove blob ``key`` if present."""
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def sizes(self) -> dict[str, int]:
        """Every stored blob: ``{key: bytes}``."""
        out: dict[str, int] = {}
        start = f"{self.prefix}/" if self.prefix else ""
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
            for item in page.get("Contents", []):
                out[item["Key"][len(start) :]] = int(item["Size"])
        return out
