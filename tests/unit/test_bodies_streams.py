"""Streaming multipart parts and streamed blobs, without services."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.uploads import MultipartReader
from commands.errors import InvalidCommand, PayloadTooLarge, UnsupportedMediaType
from infra.blobs import LocalBlobStore

BOUNDARY = "b0undary"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def body(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def read_all(reader: MultipartReader) -> list[tuple[str, str | None, bytes]]:
    seen = []
    async for part in reader.parts():
        seen.append((part.name, part.filename, b"".join([c async for c in reader.data()])))
    return seen


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_parts_arrive_whole_however_the_body_is_split(size: int) -> None:
    sent = [("type", None, b"stt"), ("input_file", "a.wav", b"RIFF" + bytes(range(256)) * 40), ("x", None, b"")]
    assert asyncio.run(read_all(MultipartReader(pieces(body(*sent), size), CTYPE, max_parts=5))) == sent


def test_malformed_bodies_and_too_many_parts_are_refused() -> None:
    with pytest.raises(InvalidCommand):
        MultipartReader(pieces(b"", 1), "multipart/form-data", max_parts=5)
    truncated = body(("type", None, b"stt"))[:-10]
    with pytest.raises(InvalidCommand):
        asyncio.run(read_all(MultipartReader(pieces(truncated, 5), CTYPE, max_parts=5)))
    many = body(*[("f", None, b"1")] * 4)
    with pytest.raises(InvalidCommand):
        asyncio.run(read_all(MultipartReader(pieces(many, 50), CTYPE, max_parts=3)))


def test_a_text_field_is_bounded() -> None:
    async def first_text(reader: MultipartReader) -> str:
        async for _ in reader.parts():
            return await reader.text(10, "too large")
        return ""

    assert asyncio.run(first_text(MultipartReader(pieces(body(("a", None, b"x" * 10)), 3), CTYPE, max_parts=2))) == "x" * 10
    with pytest.raises(PayloadTooLarge):
        asyncio.run(first_text(MultipartReader(pieces(body(("a", None, b"x" * 11)), 3), CTYPE, max_parts=2)))


def test_blobs_are_private_and_a_refused_type_leaves_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    png = b"\x89PNG\r\n\x1a\n" + bytes(20000)
    seen: list[str] = []
    blob = asyncio.run(store.save_stream(pieces(png, 100), "p.png", max_bytes=len(png), accept=seen.append))
    assert seen == ["image/png"] and blob.size == len(png)
    path = store.path(blob.key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert {stat.S_IMODE(p.stat().st_mode) for p in (path.parent, path.parent.parent, store.root)} == {0o700}
    with store.open(blob.key) as f:
        assert f.read() == png

    def refuse(ctype: str) -> None:
        raise UnsupportedMediaType(ctype)

    consumed = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal consumed
        async for chunk in pieces(png * 100, 1000):
            consumed += len(chunk)
            yield chunk

    with pytest.raises(UnsupportedMediaType):
        asyncio.run(store.save_stream(counted(), "q.png", max_bytes=10**9, accept=refuse))
    assert consumed < 10_000  # refused on the first 8 KiB
    assert [p for p in store.root.rglob("*") if p.is_file()] == [path]
