"""What one request to a provider is and what comes back: the call, the answer, its status
mapped to an engine error, and how provider text is shown (redacted, never quoted in a job)."""

from __future__ import annotations

import contextlib
import email.utils
import http
import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from processors.engines.base import EngineError, InvalidInput

__all__ = [
    "Answer",
    "Call",
    "RemoteEngineError",
    "Transient",
    "check_answer",
    "display_url",
    "json_object",
    "redact",
    "retry_after_seconds",
]

log = logging.getLogger("processors.engines.remote")
_CONTENT_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}/[a-z0-9][a-z0-9.+-]{0,63}$")
_TRANSIENT_STATUS = frozenset({408, 409, 425, 429})
_INVALID_STATUS = frozenset({400, 413, 415, 422})
_REDACTED = "[redacted]"


class RemoteEngineError(EngineError):
    """The provider stayed unavailable: 429, 5xx, connection errors or timeouts on every
    attempt.  ``retryable`` is True, so the processor retries the job later.

    Attributes:
        code: ``"engine_error"`` (class attribute).
        retryable: True (class attribute).
        status: the last HTTP status received, or None after a connection error/timeout.
        attempts: how many requests were made.
    """

    code: ClassVar[str] = "engine_error"
    retryable: ClassVar[bool] = True

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 0, detail: str | None = None) -> None:
        super().__init__(message, detail=detail)
        self.status = status
        self.attempts = attempts


class Transient(Exception):
    """One attempt failed in a way worth retrying (internal to the remote engine)."""

    def __init__(
        self, summary: str, *, status: int | None = None, retry_after: float | None = None, detail: str | None = None
    ) -> None:
        super().__init__(summary)
        self.summary = summary
        self.status = status
        self.retry_after = retry_after
        self.detail = detail


@dataclass(frozen=True)
class Call:
    """One POST to the provider: ``path`` under ``base_url``, a JSON body, or form fields
    plus the file ``upload`` (multipart field ``file``)."""

    path: str
    json_body: dict[str, Any] | None = None
    form: dict[str, str] | None = None
    upload: Path | None = None
    accept: str = "application/json"
    spool: Path | None = None
    """Where a successful answer's body is streamed (audio, up to MAX_AUDIO_BYTES); None
    keeps it in memory (JSON, up to MAX_JSON_BYTES)."""


@dataclass
class Answer:
    """A provider's answer: HTTP status, headers and the body (in ``body``, or in the file
    ``spool`` for a spooled successful answer)."""

    status: int
    headers: httpx.Headers
    body: bytes
    spool: Path | None = None
    content_type: str = field(init=False)

    def __post_init__(self) -> None:
        raw = self.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        self.content_type = raw if _CONTENT_TYPE_RE.match(raw) else ("unrecognised" if raw else "")

    @property
    def phrase(self) -> str:
        """``"HTTP 503 Service Unavailable"``: the status and its standard phrase (never the
        provider's own reason text)."""
        try:
            return f"HTTP {self.status} {http.HTTPStatus(self.status).phrase}"
        except ValueError:
            return f"HTTP {self.status}"


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Seconds the provider asks us to wait (``retry-after-ms``, ``Retry-After`` as
    seconds or as an HTTP date), or None when absent or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis:
        with contextlib.suppress(ValueError):
            value = float(millis) / 1000.0
            if math.isfinite(value):
                return max(0.0, value)
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
        return max(0.0, value) if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def redact(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` (the API key) replaced by ``[redacted]``."""
    return text.replace(secret, _REDACTED) if secret else text


def display_url(url: str, secret: str | None) -> str:
    """``url`` without user info, query or fragment (they may carry credentials), redacted."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        shown = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else url
    except ValueError:
        shown = url
    return redact(shown, secret)


def check_answer(answer: Answer, label: str, secret: str | None) -> Answer:
    """Return a 2xx answer; map any other status to an error.

    The error's message (the job's error, read by the owner and viewers) gives the
    status and a fixed phrase only; what the provider said is logged here and kept
    in ``detail``.  ``label`` names the provider in messages.

    Raises:
        EngineError: 401/403 (credentials), 429 ``insufficient_quota``, redirects,
            404 and other 4xx (not retryable).
        InvalidInput: 400, 413, 415, 422.
        Transient: 408, 409, 425, 429 and 5xx (retried).
    """
    status = answer.status
    if 200 <= status < 300:
        return answer
    said, error_code = _provider_message(answer, secret)
    phrase = answer.phrase
    if 300 <= status < 400:
        location = display_url(answer.headers.get("location", ""), secret)[:300]
        said = f"redirect to {location!r}"
    detail = f"{phrase}: {said}"
    log.warning("%s answered %s", label, detail)
    if status in (401, 403):
        raise EngineError(f"{label} refused the credentials ({phrase}); check the provider's API key", detail=detail)
    if status == 429 and error_code == "insufficient_quota":
        raise EngineError(f"{label} has no quota left ({phrase})", detail=detail)
    if status in _TRANSIENT_STATUS or status >= 500:
        raise Transient(phrase, status=status, retry_after=retry_after_seconds(answer.headers), detail=detail)
    if status in _INVALID_STATUS:
        raise InvalidInput(f"{label} rejected the request ({phrase})", detail=detail)
    if 300 <= status < 400:
        raise EngineError(f"{label} answered a redirect ({phrase}); set base_url to the final address", detail=detail)
    raise EngineError(f"{label} failed the request ({phrase})", detail=detail)


def _provider_message(answer: Answer, secret: str | None) -> tuple[str, str | None]:
    """``(message, error code)`` from an error answer, for the processor log only:
    OpenAI's ``{"error": {"message", "code"}}``, ``{"error": "..."}``, ``{"detail": ...}``,
    ``{"message": ...}``, else the start of the body text.  The key is redacted."""
    text = answer.body[:4096].decode("utf-8", errors="replace").strip()
    message: Any = None
    code: str | None = None
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict):
            error = data.get("error")
            if isinstance(error, dict):
                message = error.get("message")
                raw_code = error.get("code") or error.get("type")
                code = str(raw_code)[:100] if raw_code is not None else None
            elif isinstance(error, str):
                message = error
            if message is None:
                message = data.get("detail", data.get("message"))
    if message is not None and not isinstance(message, str):
        message = json.dumps(message, ensure_ascii=False)[:500]
    if not message:
        message = text[:300] or "no details"
    return redact(" ".join(str(message).split())[:1000], secret), code


def json_object(answer: Answer, label: str, secret: str | None) -> dict[str, Any]:
    """The answer's body as a JSON object.

    Raises:
        EngineError: the body is not a JSON object.
    """
    try:
        data = json.loads(answer.body)
    except ValueError:
        snippet = " ".join(answer.body[:200].decode("utf-8", errors="replace").split())
        log.warning("%s answered %s with a body that is not JSON: %r", label, answer.phrase, redact(snippet, secret))
        raise EngineError(
            f"{label} answered {answer.phrase} with a body that is not JSON", detail=redact(snippet, secret)
        ) from None
    if not isinstance(data, dict):
        raise EngineError(f"{label} answered {answer.phrase} with JSON that is not an object")
    return data
