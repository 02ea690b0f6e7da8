"""multipart/form-data read as it arrives, with python-multipart's streaming parser: parts
one after another, a file part's bytes handed on chunk by chunk as the client sends them,
never spooled (at most one received chunk is held)."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from commands.errors import InvalidCommand, PayloadTooLarge, invalid

#: bytes of all text fields of one multipart body together (a JSON body's default limit)
FIELDS_BYTES = 1024 * 1024
#: bytes of one part's headers (``Content-Disposition``, ``Content-Type``)
MAX_PART_HEADER_BYTES = 8 * 1024


def malformed(msg: str) -> InvalidCommand:
    """A 422 about the multipart body as a whole."""
    return invalid((), msg, f"the multipart body is malformed: {msg}")


@dataclass(frozen=True)
class Part:
    """One part's ``name`` and, for a file, its ``filename`` (None for a text field)."""

    name: str
    filename: str | None


class MultipartReader:
    """The parts of a multipart/form-data body read from ``stream`` (e.g. ``request.stream()``).

    ``async for part in reader.parts()`` yields each :class:`Part` once its headers arrived;
    read its bytes with ``reader.data()`` (an async iterator) or ``await reader.text(n)``
    before asking for the next part (unread bytes are skipped).

    Raises InvalidCommand (422) for a malformed body or more than ``max_parts`` parts.
    """

    def __init__(self, stream: AsyncIterator[bytes], content_type: str, *, max_parts: int) -> None:
        _, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if not boundary:
            raise malformed("multipart/form-data needs a boundary")
        self._stream, self._max_parts = stream, max_parts
        self._events: deque[tuple[str, bytes | Part]] = deque()
        self._headers: list[tuple[bytes, bytes]] = []
        self._field, self._value, self._header_bytes = b"", b"", 0
        self._ended = False
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": lambda: self._events.append(("end", b"")),
                "on_end": lambda: self._events.append(("fin", b"")),
            },
        )

    # -- the parser's callbacks (synchronous, within ``write``) --

    def _part_begin(self) -> None:
        self._headers, self._field, self._value, self._header_bytes = [], b"", b"", 0

    def _grow(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise malformed(f"a part's headers are over {MAX_PART_HEADER_BYTES} bytes")

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._grow(end - start)
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._grow(end - start)
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers.append((self._field.lower(), self._value))
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        disposition = dict(self._headers).get(b"content-disposition", b"")
        kind, options = parse_options_header(disposition)
        if kind != b"form-data" or b"name" not in options:
            raise malformed("each part needs Content-Disposition: form-data with a name")
        filename = options.get(b"filename")
        part = Part(
            options[b"name"].decode("utf-8", "replace"), None if filename is None else filename.decode("utf-8", "replace")
        )
        self._events.append(("part", part))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._events.append(("data", data[start:end]))

    # -- reading --

    async def _next(self) -> tuple[str, bytes | Part]:
        while not self._events:
            if self._ended:
                raise malformed("the body ended before its closing boundary")
            try:
                chunk = await anext(self._stream)
            except StopAsyncIteration:
                self._ended = True
                self._parser.finalize()
                continue
            try:
                self._parser.write(chunk)
            except MultipartParseError as exc:
                raise malformed(str(exc) or "unparsable") from None
        return self._events.popleft()

    async def parts(self) -> AsyncIterator[Part]:
        """Each part in order, once its headers have arrived."""
        count = 0
        while True:
            kind, value = await self._next()
            if kind == "fin":
                return
            if kind == "part" and isinstance(value, Part):
                count += 1
                if count > self._max_parts:
                    raise malformed(f"at most {self._max_parts} parts are taken")
                self._current_open = True
                yield value
                async for _ in self.data():  # bytes the caller left unread
                    pass

    async def data(self) -> AsyncIterator[bytes]:
        """The bytes of the current part, as they arrive."""
        while self._current_open:
            kind, value = await self._next()
            if kind == "end":
                self._current_open = False
            elif kind == "data" and isinstance(value, bytes):
                yield value
            else:
                raise malformed("a part ended without its boundary")

    async def text(self, max_bytes: int, too_large: str) -> str:
        """The current part as UTF-8 text. Raises PayloadTooLarge (``too_large``) over
        ``max_bytes``, InvalidCommand when it is not UTF-8."""
        collected = bytearray()
        async for chunk in self.data():
            collected += chunk
            if len(collected) > max_bytes:
                raise PayloadTooLarge(too_large)
        try:
            return collected.decode("utf-8")
        except UnicodeDecodeError:
            raise malformed("a text field is not UTF-8") from None

    _current_open = False
