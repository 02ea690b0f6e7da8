"""The senders' half of the webhook dispatcher: one attempt of one delivery, POSTed to the
address the outbound guard checked (DNS rebinding: the request goes to the checked
address), signed per Standard Webhooks, no redirects, at most 4 KiB of the answer read."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from commands.outbound import OutboundRefused, Resolver, check_url, pin_url

MAX_RESPONSE_BYTES = 4096
USER_AGENT = "aiorch-webhooks/1"


def signature_header(secrets: list[str], msg_id: str, at: datetime, body: str) -> str:
    """``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` per secret, space-separated
    (Standard Webhooks; signed with the ``standardwebhooks`` reference library)."""
    return " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


@dataclass(frozen=True)
class AttemptResult:
    """One attempt: ``status_code`` None when no answer (``error`` says why)."""

    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def outcome(self) -> str:
        """succeeded, http_error, refused (the guard) or network_error (metrics)."""
        if self.ok:
            return "succeeded"
        if self.status_code is not None:
            return "http_error"
        return "refused" if (self.error or "").startswith("refused") else "network_error"

    def as_json(self) -> dict[str, Any]:
        """``{at, status_code, error, duration_ms}``."""
        return {"at": self.at.isoformat(), "status_code": self.status_code, "error": self.error, "duration_ms": self.duration_ms}


class Sender:
    """POSTs one delivery to its URL, pinned to the address the guard checked.

    Args:
        allow_private: ``AIORCH_WEBHOOK_ALLOW_PRIVATE``.
        timeout_s: seconds for the whole attempt (connect, send, first bytes).
        resolver: the guard's resolver (injected by tests; default the system's).
    """

    def __init__(self, *, allow_private: bool, timeout_s: float, resolver: Resolver | None = None, pool: int = 16) -> None:
        self.allow_private, self.timeout_s, self.resolver = allow_private, timeout_s, resolver
        limits = httpx.Limits(max_connections=pool * 2, max_keepalive_connections=pool)
        self.client = httpx.Client(trust_env=False, follow_redirects=False, timeout=timeout_s, limits=limits)

    def send(self, url: str, msg_id: str, body: str, secrets: list[str]) -> AttemptResult:
        """One attempt; never raises."""
        started, at = time.perf_counter(), datetime.now(UTC)

        def result(code: int | None, error: str | None, retry_after: float | None = None) -> AttemptResult:
            return AttemptResult(at, code, error, int((time.perf_counter() - started) * 1000), retry_after)

        try:
            target = check_url(url, field="url", allow_private=self.allow_private, resolve=True, resolver=self.resolver)
        except OutboundRefused as exc:
            return result(None, f"refused: {exc.reason}")
        except OSError as exc:
            return result(None, f"dns: {exc}")
        pinned = pin_url(target, target.addresses[0])
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "host": pinned.host_header,
            "webhook-id": msg_id,
            "webhook-timestamp": str(math.floor(at.timestamp())),
            "webhook-signature": signature_header(secrets, msg_id, at, body),
        }
        extensions = {"sni_hostname": pinned.server_hostname} if pinned.server_hostname else {}
        try:
            request = self.client.build_request("POST", pinned.url, content=body.encode(), headers=headers, extensions=extensions)
            response = self.client.send(request, stream=True)
            try:
                read = 0
                snippet = b""
                for chunk in response.iter_raw():
                    if read < 200:
                        snippet += chunk[: 200 - read]
                    read += len(chunk)
                    if read >= MAX_RESPONSE_BYTES:
                        break
            finally:
                response.close()
        except httpx.TimeoutException:
            return result(None, f"timeout: no answer within {self.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return result(None, f"network: {type(exc).__name__}: {exc}"[:300])
        code = response.status_code
        if 200 <= code < 300:
            return result(code, None)
        error = f"HTTP {code}" + (f": {snippet.decode(errors='replace')}" if snippet else "")
        return result(code, error[:300], retry_after_seconds(response.headers.get("retry-after"), datetime.now(UTC)))

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()
