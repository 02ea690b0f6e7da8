"""The HTTP client of the remote engine: one POST to an OpenAI-compatible provider, with
retries (tenacity: exponential backoff with jitter, honouring ``Retry-After``), a cancel
check every 0.1 s, the outbound-address guard (resolve, check, pin) before each attempt and
size caps on every answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import random
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
import tenacity

from commands.outbound import Network, OutboundRefused, PinnedRequest, Resolver, check_url, pin_url
from processors.engines.base import EngineContext, EngineError

from .answers import Answer, Call, RemoteEngineError, Transient, check_answer, display_url, json_object, redact

__all__ = ["MAX_AUDIO_BYTES", "MAX_ERROR_BYTES", "MAX_JSON_BYTES", "ProviderClient"]

MAX_JSON_BYTES = 4 * 1024 * 1024
"""Largest JSON (or text) answer accepted, in bytes; a larger one fails the job with EngineError."""

MAX_AUDIO_BYTES = 64 * 1024 * 1024
"""Largest audio answer accepted, in bytes (about 23 min of 24 kHz 16-bit mono); it is
streamed to a file in the work folder, never held in memory."""

MAX_ERROR_BYTES = 64 * 1024
"""Bytes of an error answer read (the rest is dropped with the connection)."""

log = logging.getLogger("processors.engines.remote")
_RESOLVERS = ThreadPoolExecutor(4, thread_name_prefix="remote-resolve")
_POLL_S = 0.1
_T = TypeVar("_T")
_Trace = Callable[[str, dict[str, Any]], Coroutine[Any, Any, None]]


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion on a fresh event loop (on a helper thread if this
    thread already runs a loop) and return its result or raise its exception."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(1, thread_name_prefix="remote-engine") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


class ProviderClient:
    """POSTs calls to one provider (``base_url``) with retries, cancel checks, the outbound
    guard and size caps.  No network access at construction.

    Args:
        base_url: the API root, without a trailing slash.
        api_key: sent as ``Authorization: Bearer <key>``; None sends no header.
        label: how messages name the provider (``"provider 'fake' (host:port)"``).
        host: ``host[:port]`` of ``base_url`` (for messages).
        timeout_s, max_retries, backoff_s, backoff_cap_s: see
            :class:`~processors.engines.remote.OpenAICompatibleEngine`.
        allowed_networks: non-public networks the provider may live in.
        resolver: ``resolver(host, port) -> addresses`` (default ``socket.getaddrinfo``).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        label: str,
        host: str,
        timeout_s: float,
        max_retries: int,
        backoff_s: float,
        backoff_cap_s: float,
        allowed_networks: tuple[Network, ...],
        resolver: Resolver | None,
    ) -> None:
        self.base_url, self.api_key, self.label, self.host = base_url, api_key, label, host
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.backoff_cap_s = backoff_s, backoff_cap_s
        self.allowed_networks, self.resolver = allowed_networks, resolver

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced by ``[redacted]``."""
        return redact(text, self.api_key)

    def json_object(self, answer: Answer) -> dict[str, Any]:
        """The answer's body as a JSON object (EngineError when it is not one)."""
        return json_object(answer, self.label, self.api_key)

    def post(self, ctx: EngineContext, call: Call, model: str) -> Answer:
        """POST ``call`` with retries; return the successful (2xx) answer.

        Raises:
            EngineCancelled: ``ctx.should_stop()`` became True (also mid-request and between retries).
            RemoteEngineError: the provider stayed unavailable (retryable).
            EngineError, InvalidInput: see :func:`~processors.engines.remote.answers.check_answer`;
                EngineError also when the address is refused or the answer is too large.
        """
        shown = display_url(self.base_url + call.path, self.api_key)
        ctx.log_safe("info", f"POST {shown} (model {model}) on {self.label}")
        return _run_coroutine(lambda: self._post_async(ctx, call))

    async def _post_async(self, ctx: EngineContext, call: Call) -> Answer:
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempts = 0
        floor = [0]

        def progress(value: int, stage: str) -> None:
            floor[0] = max(floor[0], value)  # never move the bar backwards on a retry
            ctx.progress(floor[0], stage)

        async def trace(name: str, info: dict[str, Any]) -> None:
            if name.endswith("send_request_body.complete"):
                progress(25, "waiting for provider")

        headers = {"User-Agent": "aiorch-remote-engine"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0))
        # trust_env=False: no proxy from the environment, so the connection goes to the
        # address that was checked (a proxy would resolve the name itself)
        async with httpx.AsyncClient(headers=headers, timeout=timeout, follow_redirects=False, trust_env=False) as client:
            try:
                async for attempt in self._retrying(ctx):
                    with attempt:
                        attempts += 1
                        progress(5, "uploading")
                        return await self._attempt(client, ctx, call, trace, attempts)
            except Transient as exc:
                elapsed = loop.time() - started
                raise RemoteEngineError(
                    self.redact(
                        f"{self.label} is unavailable: {exc.summary} "
                        f"({attempts} attempt(s) over {elapsed:.1f} s; the job can be retried later)"
                    ),
                    status=exc.status,
                    attempts=attempts,
                    detail=exc.detail,
                ) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _retrying(self, ctx: EngineContext) -> tenacity.AsyncRetrying:
        """Tenacity's loop: retry :class:`Transient` up to ``max_retries`` times, check for a
        cancel before each attempt and every 0.1 s of a wait, log each retry as a warning."""
        loop = asyncio.get_running_loop()

        def before(state: tenacity.RetryCallState) -> None:
            ctx.check_stop()

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            summary = exc.summary if isinstance(exc, Transient) else repr(exc)
            delay = state.next_action.sleep if state.next_action is not None else 0.0
            ctx.log_safe(
                "warning",
                self.redact(
                    f"{self.label}: {summary} (attempt {state.attempt_number} of {self.max_retries + 1}); "
                    f"retrying in {delay:.2f} s"
                ),
            )

        async def sleep(seconds: float) -> None:
            deadline = loop.time() + seconds
            while True:
                ctx.check_stop()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                await asyncio.sleep(min(_POLL_S, remaining))

        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(Transient),
            before=before,
            before_sleep=before_sleep,
            sleep=sleep,
            reraise=True,
        )

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Seconds before the next attempt: the provider's Retry-After, else exponential
        backoff with jitter; both capped at ``backoff_cap_s``."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, Transient) and exc.retry_after is not None:
            return float(min(exc.retry_after, self.backoff_cap_s))
        delay = self.backoff_s * 2 ** (state.attempt_number - 1) + random.uniform(0, self.backoff_s)
        return float(min(delay, self.backoff_cap_s))

    async def _attempt(self, client: httpx.AsyncClient, ctx: EngineContext, call: Call, trace: _Trace, number: int) -> Answer:
        """Attempt ``number`` (1-based): check the address, send one request, polled every
        0.1 s for cancellation and bounded by ``timeout_s``.

        Raises:
            Transient: timeout, connection or name-resolution failure, or a transient HTTP status.
            EngineCancelled / EngineError / InvalidInput: see ``check_answer``; EngineError also
                when the address is refused (nothing is sent) or the answer is too large.
        """
        handle = call.upload.open("rb") if call.upload is not None else None
        try:
            files = None
            if handle is not None and call.upload is not None:
                mime = mimetypes.guess_type(call.upload.name)[0] or "application/octet-stream"
                files = {"file": (call.upload.name, handle, mime)}
            task = asyncio.ensure_future(self._send(client, call, files, trace, number))
            answer = await self._await_polling(ctx, task)
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
            log.warning("%s: cannot send the request: %s", self.label, self.redact(f"{type(exc).__name__}: {exc}"))
            raise EngineError(f"{self.label}: cannot send the request ({type(exc).__name__})") from None
        except httpx.TimeoutException as exc:
            raise Transient(f"no answer within {self.timeout_s:g} s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            detail = self.redact(f"{type(exc).__name__}: {exc or 'no details'}")
            log.warning("%s: connection failed: %s", self.label, detail)
            raise Transient(f"connection failed ({type(exc).__name__})", detail=detail) from None
        finally:
            if handle is not None:
                handle.close()
        return check_answer(answer, self.label, self.api_key)

    async def _send(
        self, client: httpx.AsyncClient, call: Call, files: dict[str, Any] | None, trace: _Trace, number: int
    ) -> Answer:
        """Resolve and check the host, then send ``call`` to one checked address (attempt
        ``number`` takes the next address in turn) and read the answer."""
        pinned = await self._pinned(self.base_url + call.path, number)
        headers = {"Accept": call.accept, "Host": pinned.host_header}
        extensions: dict[str, Any] = {"trace": trace}
        if pinned.server_hostname:  # TLS names and verifies the host, not the address
            extensions["sni_hostname"] = pinned.server_hostname
        request = client.build_request(
            "POST", pinned.url, json=call.json_body, data=call.form, files=files, headers=headers, extensions=extensions
        )
        return await self._exchange(client, request, call)

    async def _pinned(self, url: str, number: int) -> PinnedRequest:
        """``url`` pinned to an address of its host that the outbound guard admits.

        Raises:
            EngineError: the host is refused (a forbidden address, a metadata name); no
                request is sent.
            Transient: the name does not resolve now.
        """
        loop = asyncio.get_running_loop()
        try:
            target = await loop.run_in_executor(
                _RESOLVERS,
                lambda: check_url(url, allowed_networks=self.allowed_networks, resolve=True, resolver=self.resolver),
            )
        except OutboundRefused as exc:
            log.warning("%s: request refused by the outbound guard: base_url %s", self.label, exc.reason)
            raise EngineError(
                f"{self.label}: the provider's address is not allowed (not a public address); no request was sent",
                detail=f"base_url {exc.reason}",
            ) from None
        except OSError as exc:
            raise Transient(f"cannot resolve {self.host} ({type(exc).__name__})") from None
        return pin_url(target, target.addresses[(number - 1) % len(target.addresses)], url)

    async def _exchange(self, client: httpx.AsyncClient, request: httpx.Request, call: Call) -> Answer:
        """Send ``request`` and read the answer as a stream: a 2xx body up to its cap
        (MAX_AUDIO_BYTES into ``call.spool``, else MAX_JSON_BYTES in memory; a larger one,
        announced or not, fails at once), an error body up to MAX_ERROR_BYTES (the rest is
        dropped with the connection).

        Raises:
            EngineError: the answer is larger than its cap.
        """
        response = await client.send(request, stream=True)
        try:
            ok = 200 <= response.status_code < 300
            spool = call.spool if ok else None
            limit = (MAX_AUDIO_BYTES if spool is not None else MAX_JSON_BYTES) if ok else MAX_ERROR_BYTES
            declared = response.headers.get("content-length", "")
            if ok and declared.isdigit() and int(declared) > limit:
                raise self._too_large(limit, f"Content-Length {declared}")
            body = bytearray()
            size = 0
            with open(spool, "wb") if spool is not None else contextlib.nullcontext() as sink:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        if not ok:  # enough of an error answer to tell what it is
                            body.extend(chunk[: max(0, limit - len(body))])
                            break
                        raise self._too_large(limit, f"more than {limit} bytes")
                    if sink is not None:
                        sink.write(chunk)
                    else:
                        body.extend(chunk)
        finally:
            await response.aclose()
        return Answer(response.status_code, response.headers, bytes(body), spool)

    def _too_large(self, limit: int, what: str) -> EngineError:
        kind = "audio" if limit == MAX_AUDIO_BYTES else "JSON"
        log.warning("%s: answer refused: %s (limit %d bytes)", self.label, what, limit)
        return EngineError(f"{self.label} answered more than {limit // (1024 * 1024)} MiB, the limit for {kind} answers")

    async def _await_polling(self, ctx: EngineContext, task: asyncio.Future[Answer]) -> Answer:
        """Wait for ``task``, checking ``should_stop`` every 0.1 s; cancel it (closing
        its connection) on a cancel or after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=_POLL_S)
                if done:
                    return task.result()
                ctx.check_stop()
                if loop.time() >= deadline:
                    raise Transient(f"no answer within {self.timeout_s:g} s")
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
