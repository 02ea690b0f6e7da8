"""File downloads from blob storage: a local file is served as a file; an object in remote
storage streams through the API with ``Range`` (one range, 206), so clients never need to
reach the object store and signed links keep working exactly as they are."""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from commands.errors import NotFound

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def byte_range(header: str | None, size: int) -> tuple[int, int] | Literal[False] | None:
    """The inclusive byte range a ``Range`` header asks of a ``size``-byte file: None for the
    whole file (no header, several ranges or one this parser does not read: RFC 9110 lets a
    server ignore it), False when it cannot be satisfied (416)."""
    if not header:
        return None
    m = _RANGE.match(header)
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return False
        return max(size - n, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return False
    return start, end


def content_disposition(filename: str) -> str:
    """``attachment; filename=…`` as Starlette's FileResponse writes it (RFC 6266)."""
    quoted = quote(filename)
    if quoted != filename:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{filename}"'


def download(blobs: Any, request: Request, blob: dict[str, Any]) -> Response:
    """The stored file described by ``blob`` (``{blob, name, content_type}``): 200, or 206
    for a satisfiable ``Range``, with Content-Type, Content-Length and Content-Disposition.
    Raises NotFound when it is no longer stored."""
    path = blobs.local_path(blob["blob"])
    if path is not None:
        return FileResponse(path, media_type=blob["content_type"], filename=blob["name"])
    size = blobs.size(blob["blob"])
    if size is None:
        raise NotFound("the file is no longer stored")
    headers = {"Accept-Ranges": "bytes", "Content-Disposition": content_disposition(blob["name"])}
    wanted = byte_range(request.headers.get("range"), size)
    if wanted is False:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    if wanted is None:
        start, end, status = 0, size - 1, 200
    else:
        (start, end), status = wanted, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    body = blobs.iter_range(blob["blob"], start, end) if end >= start else iter(())
    return StreamingResponse(body, status_code=status, headers=headers, media_type=blob["content_type"])
