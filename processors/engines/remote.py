from __future__ import annotations

# Remote engine: runs stt, tts and ai_stories jobs on an OpenAI-compatible HTTP provider
# (OpenAI itself, or any server that speaks the same API: /audio/transcriptions,
# /audio/speech, /chat/completions), and maps the answers to the result shapes of the
# local engines, so a job's result looks the same wherever it ran.
#
# Each request runs on a private asyncio event loop (httpx.AsyncClient) while the calling
# thread's loop polls ``ctx.should_stop()`` every 0.1 s: a cancel aborts the request
# (the connection is closed) and raises JobCancelled within about 0.1 s, even when the
# provider hangs.  Transient failures (429, 408, 409, 425, 5xx, connection errors,
# timeouts) are retried by tenacity with exponential backoff and jitter, honouring
# ``Retry-After``; a provider that stays unavailable fails the job with
# RemoteEngineError (retryable: the job is retried later).  Refused credentials and other
# configuration errors fail it with EngineError (not retryable), and requests the
# provider rejects (400/413/415/422) with InvalidInput.  The API key is only ever sent in
# the Authorization header; it is redacted from every message this module produces.
#
# Outbound guard (commands.outbound, API.md "Outbound addresses"): before each attempt the
# host of base_url is resolved (an injectable resolver) and every address checked; a
# forbidden one fails the job with no request sent.  The request then goes to the checked
# address itself (the URL carries the address, the Host header and TLS SNI/certificate
# check carry the name), so DNS cannot answer differently between check and connect.
# Redirects are not followed, environment proxies are not used.  Answers are streamed with
# a size cap (JSON MAX_JSON_BYTES, audio MAX_AUDIO_BYTES straight to a file, error bodies
# MAX_ERROR_BYTES), and what a provider says is never quoted in a job's error or logs (the
# owner and viewers read them): those carry the status and a fixed phrase; the provider's
# words go to the processor's log (and EngineError.detail).
import asyncio
import contextlib
import email.utils
import http
import importlib.util
import io
import json
import logging
import math
import mimetypes
import random
import re
import wave
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import httpx
import tenacity

from commands.outbound import Network, OutboundRefused, PinnedRequest, Resolver, check_url, parse_networks, pin_url

from .base import (
    Engine,
    EngineContext,
    EngineError,
    EngineResult,
    InvalidInput,
    atomic_output,
    prepare_work_dir,
)
from .media import check_duration, probe_media
from .stories import (
    count_words,
    trim_to_length,
)

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_VOICE",
    "REMOTE_JOB_TYPES",
    "OpenAICompatibleEngine",
    "RemoteEngineError",
    "build_remote_engine",
    "whisper_language_code",
]

REMOTE_JOB_TYPES: tuple[str, ...] = ("stt", "tts", "ai_stories")
"""Job types an OpenAI-compatible provider can serve."""

DEFAULT_MODELS: dict[str, str] = {"stt": "whisper-1", "tts": "tts-1", "ai_stories": "gpt-4o-mini"}
"""Model asked for when neither the engine nor the provider configuration names one."""

DEFAULT_VOICE = "alloy"
"""TTS voice asked for when the job has no ``voice`` parameter."""

MAX_JSON_BYTES = 4 * 1024 * 1024
"""Largest JSON (or text) answer accepted, in bytes; a larger one fails the job with EngineError."""

MAX_AUDIO_BYTES = 64 * 1024 * 1024
"""Largest audio answer accepted, in bytes (about 23 min of 24 kHz 16-bit mono); it is
streamed to a file in the work folder, never held in memory."""

MAX_ERROR_BYTES = 64 * 1024
"""Bytes of an error answer read (the rest is dropped with the connection)."""

log = logging.getLogger(__name__)
_RESOLVERS = ThreadPoolExecutor(4, thread_name_prefix="remote-resolve")
_CONTENT_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}/[a-z0-9][a-z0-9.+-]{0,63}$")

_POLL_S = 0.1
_TRANSIENT_STATUS = frozenset({408, 409, 425, 429})
_INVALID_STATUS = frozenset({400, 413, 415, 422})
_AUDIO_FIELDS = ("input_file", "audio", "file")
_TEXT_FIELDS = ("input_file", "text_file", "text")
_LANG_RE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")
_REDACTED = "[redacted]"

# Whisper's language names (as OpenAI's verbose_json reports them) -> codes.
_WHISPER_NAMES = """
en english|zh chinese|de german|es spanish|ru russian|ko korean|fr french|ja japanese|pt portuguese|tr turkish|pl polish
ca catalan|nl dutch|ar arabic|sv swedish|it italian|id indonesian|hi hindi|fi finnish|vi vietnamese|he hebrew
uk ukrainian|el greek|ms malay|cs czech|ro romanian|da danish|hu hungarian|ta tamil|no norwegian|th thai|ur urdu
hr croatian|bg bulgarian|lt lithuanian|la latin|mi maori|ml malayalam|cy welsh|sk slovak|te telugu|fa persian
lv latvian|bn bengali|sr serbian|az azerbaijani|sl slovenian|kn kannada|et estonian|mk macedonian|br breton|eu basque
is icelandic|hy armenian|ne nepali|mn mongolian|bs bosnian|kk kazakh|sq albanian|sw swahili|gl galician|mr marathi
pa punjabi|si sinhala|km khmer|sn shona|yo yoruba|so somali|af afrikaans|oc occitan|ka georgian|be belarusian
tg tajik|sd sindhi|gu gujarati|am amharic|yi yiddish|lo lao|uz uzbek|fo faroese|ht haitian creole|ps pashto
tk turkmen|nn nynorsk|mt maltese|sa sanskrit|lb luxembourgish|my myanmar|bo tibetan|tl tagalog|mg malagasy
as assamese|tt tatar|haw hawaiian|ln lingala|ha hausa|ba bashkir|jw javanese|su sundanese|yue cantonese
my burmese|ca valencian|nl flemish|ht haitian|lb letzeburgesch|ps pushto|pa panjabi|ro moldavian|ro moldovan
si sinhalese|es castilian|zh mandarin
"""
_LANGUAGE_CODES: dict[str, str] = {
    name: code for code, name in (pair.split(" ", 1) for pair in re.split(r"[|\n]", _WHISPER_NAMES.strip()))
}

_T = TypeVar("_T")


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


class _Transient(Exception):
    """One attempt failed in a way worth retrying (internal to this module)."""

    def __init__(
        self, summary: str, *, status: int | None = None, retry_after: float | None = None, detail: str | None = None
    ) -> None:
        super().__init__(summary)
        self.summary = summary
        self.status = status
        self.retry_after = retry_after
        self.detail = detail


@dataclass(frozen=True)
class _Call:
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
class _Answer:
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


def whisper_language_code(value: Any) -> str | None:
    """Map a language as providers report it to a Whisper code.

    ``"english"`` / ``"English"`` -> ``"en"``; codes and locale tags (``"en"``,
    ``"en-US"``) -> their base code; ``None``, ``""`` or an unknown name -> None.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().lower()
    if text in _LANGUAGE_CODES:
        return _LANGUAGE_CODES[text]
    if _LANG_RE.match(text):
        return re.split(r"[-_]", text, maxsplit=1)[0]
    return None


def _retry_after_seconds(headers: httpx.Headers) -> float | None:
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


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion on a fresh event loop (on a helper thread if this
    thread already runs a loop) and return its result or raise its exception."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(1, thread_name_prefix="remote-engine") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


class OpenAICompatibleEngine(Engine):
    """Runs ``stt``, ``tts`` or ``ai_stories`` jobs on an OpenAI-compatible provider.

    One instance serves one job type (``type`` is set per instance); ``name`` is
    ``"openai-compatible:<host[:port]>"``.  Nothing is loaded: :meth:`load` and
    :meth:`close` do nothing, and each job opens its own HTTP connection(s).

    stt: POST ``{base_url}/audio/transcriptions`` (``/audio/translations`` for
    ``task="translate"``), multipart ``file`` + ``model`` + ``response_format=verbose_json``
    (+ ``language``).  Job parameters as for the local engine: ``language`` (code,
    locale or ``"auto"``), ``task`` (``"transcribe"``/``"translate"``); input
    ``input_files["input_file"]``.  Files ``transcript.txt`` and ``transcript.json``; meta::

        {"transcript": str, "language": str, "duration_seconds": float,
         "segments": [{"start": float, "end": float, "text": str,
                       "words": [{"start": float, "end": float, "word": str}]}]}

    (seconds; ``words`` only when the provider returned word timings; ``language`` is a
    Whisper code such as ``"en"`` even when the provider answers ``"english"``).

    tts: POST ``{base_url}/audio/speech`` JSON ``{model, input, voice,
    response_format: "wav"}``.  Parameters ``text`` (or a UTF-8 text file in
    ``input_file``), ``voice`` (default :data:`DEFAULT_VOICE`), ``language`` (only
    reported back; default ``"en"``).  File ``speech.wav`` (the provider's PCM, header
    rewritten so its sizes are right); meta ``{"duration_seconds": float, "voice": str,
    "language": str}``.

    ai_stories: POST ``{base_url}/chat/completions`` JSON ``{model, messages, seed,
    max_tokens}``.  Parameters as for the local engine: ``prompt``, ``length`` (words,
    default 300, 20..2000), ``style``, ``seed`` (drawn when absent); ``narrate`` is not
    supported.  File ``story.txt``; meta ``{"text": str, "words": int, "seed": int,
    "model": str, "length": int}`` (the text is cut at the sentence end nearest to
    ``length`` words within ±25 %).

    Progress: ``uploading`` (5 %), ``waiting for provider`` (25 %, once the request body
    is sent), ``writing result`` (90 % then 100 %).  Retries are logged as warnings.
    """

    def __init__(
        self,
        job_type: str,
        base_url: str,
        api_key: str | None,
        *,
        model: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        backoff_cap_s: float = 8.0,
        provider_name: str | None = None,
        allowed_networks: Iterable[str | Network] = (),
        resolver: Resolver | None = None,
    ) -> None:
        """Configure the engine (no network access here).

        Args:
            job_type: the job type this instance serves; types other than
                :data:`REMOTE_JOB_TYPES` fail at :meth:`run` with InvalidInput.
            base_url: the API root, e.g. ``"https://api.openai.com/v1"`` (endpoints are
                appended to it).  An unusable URL fails every job with InvalidInput.
            api_key: sent as ``Authorization: Bearer <key>``; None/"" sends no header.
            model: model name; default :data:`DEFAULT_MODELS` for the job type.
            timeout_s: seconds allowed for one attempt as a whole (connect, upload,
                provider work, download); each network phase also times out after it.
            max_retries: retries after the first attempt for transient failures, so at
                most ``max_retries + 1`` requests.
            backoff_s: wait before retry n (1-based) is ``backoff_s * 2**(n-1)`` plus a
                random 0..``backoff_s`` jitter, capped at ``backoff_cap_s``; a
                ``Retry-After`` answer replaces it (also capped at ``backoff_cap_s``).
            provider_name: how messages name the provider (default: its host).
            allowed_networks: CIDRs the provider may live in although they are not public
                (``AIORCH_PROVIDER_ALLOWED_NETWORKS``); every other non-public address is
                refused before each request (see :mod:`commands.outbound`).
            resolver: ``resolver(host, port) -> addresses`` used before each request
                (default ``socket.getaddrinfo``); tests inject one.

        Raises:
            ValueError: a bad tuning value, or an allowed network that is not a CIDR.
        """
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0 or backoff_cap_s < 0:
            raise ValueError("timeout_s must be > 0 and max_retries, backoff_s, backoff_cap_s >= 0")
        self.type = job_type  # type: ignore[misc]  # per instance on purpose: one class serves several job types
        self._api_key = api_key or None
        self.base_url = str(base_url or "").strip().rstrip("/")
        self.model = model or DEFAULT_MODELS.get(job_type, "")
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.backoff_cap_s = float(backoff_cap_s)
        self._config_error: str | None = None
        self.allowed_networks = parse_networks(allowed_networks)
        self.resolver = resolver
        parts = urlsplit(self.base_url)
        host = ""
        try:
            host = parts.hostname or ""
            if parts.port is not None:
                host = f"{host}:{parts.port}"
        except ValueError:
            host = ""
        if parts.scheme not in ("http", "https") or not host:
            self._config_error = f"provider base_url {self._display_url(self.base_url)!r} is not an http(s) URL with a host"
        else:
            try:
                check_url(self.base_url, allowed_networks=self.allowed_networks)
            except OutboundRefused as exc:
                self._config_error = f"provider base_url is refused: it {exc.reason}"
        self.host = host or "invalid-url"
        self.name = f"openai-compatible:{self.host}"  # type: ignore[misc]  # per instance, like type
        self.provider_name = provider_name or self.host
        self._label = f"provider {self.provider_name!r}" + (f" ({self.host})" if provider_name else "")

    def __repr__(self) -> str:
        return (
            f"OpenAICompatibleEngine(type={self.type!r}, base_url={self._display_url(self.base_url)!r}, "
            f"model={self.model!r}, has_api_key={self._api_key is not None})"
        )

    @property
    def has_api_key(self) -> bool:
        """True when requests carry an Authorization header."""
        return self._api_key is not None

    def load(self) -> None:
        """Nothing to load (the provider holds the model).  Idempotent."""

    def close(self) -> None:
        """Nothing to release (each job closes its own connections).  Idempotent."""

    # -- one job -------------------------------------------------------------------------

    def run(self, ctx: EngineContext) -> EngineResult:
        """Run one job on the provider; see the class docstring for shapes.

        Raises:
            InvalidInput: unusable input or parameters, a job type the provider does not
                serve, an unusable ``base_url``, or the provider rejected the request
                (HTTP 400/413/415/422; the message quotes the provider).
            JobCancelled: ``ctx.should_stop()`` became True (checked every 0.1 s, also
                while a request is in flight and between retries).
            RemoteEngineError: the provider stayed unavailable (retryable).
            EngineError: the provider refused the credentials (401/403), answered
                something unusable, or another non-transient error (not retryable).
        """
        ctx.check_stop()
        if self.type not in REMOTE_JOB_TYPES:
            raise InvalidInput(f"the provider does not serve {self.type} jobs (it serves {', '.join(REMOTE_JOB_TYPES)})")
        if self._config_error:
            raise InvalidInput(self._config_error)
        work_dir = prepare_work_dir(ctx.work_dir)
        if self.type == "stt":
            return self._stt(ctx, work_dir)
        if self.type == "tts":
            return self._tts(ctx, work_dir)
        return self._story(ctx, work_dir)

    # -- stt -----------------------------------------------------------------------------

    def _stt(self, ctx: EngineContext, work_dir: Path) -> EngineResult:
        source = _audio_input(ctx)
        language = _requested_language(ctx.parameters.get("language"))
        task = ctx.parameters.get("task") or "transcribe"
        if task not in ("transcribe", "translate"):
            raise InvalidInput(f"parameter 'task' must be 'transcribe' or 'translate', got {task!r}")
        check_duration(ctx, _local_duration(source), f"input_file {source.name!r}")
        form = {"model": self.model, "response_format": "verbose_json"}
        if language and task == "transcribe":
            form["language"] = language
        path = "/audio/translations" if task == "translate" else "/audio/transcriptions"
        answer = self._post(ctx, _Call(path, form=form, upload=source))
        data = self._json_object(answer)
        ctx.progress(90, "writing result")
        meta = _stt_meta(data, "en" if task == "translate" else language)
        check_duration(ctx, meta["duration_seconds"] or None, f"input_file {source.name!r}")
        txt_path = work_dir / "transcript.txt"
        json_path = work_dir / "transcript.json"
        with atomic_output(txt_path, "w", encoding="utf-8") as handle:
            handle.write(meta["transcript"] + "\n")
        with atomic_output(json_path, "w", encoding="utf-8") as handle:
            json.dump(meta, handle, ensure_ascii=False, indent=2)
        ctx.log_safe(
            "info",
            f"{self._label} transcribed {meta['duration_seconds']:.1f} s of audio "
            f"({len(meta['segments'])} segment(s), language {meta['language'] or 'unknown'})",
        )
        ctx.progress(100, "writing result")
        return EngineResult(files=[txt_path, json_path], meta=meta)

    # -- tts -----------------------------------------------------------------------------

    def _tts(self, ctx: EngineContext, work_dir: Path) -> EngineResult:
        text = _tts_text(ctx)
        voice = ctx.parameters.get("voice") or DEFAULT_VOICE
        if not isinstance(voice, str) or len(voice) > 100:
            raise InvalidInput(f"parameter 'voice' must be a voice name of at most 100 characters, got {voice!r}")
        language = ctx.parameters.get("language") or "en"
        if not isinstance(language, str) or not _LANG_RE.match(language.strip()):
            raise InvalidInput(f"parameter 'language' must be a language code like 'en' or 'es-ES', got {language!r}")
        body = {"model": self.model, "input": text, "voice": voice.strip(), "response_format": "wav"}
        spool = work_dir / ".speech.download"
        answer = self._post(ctx, _Call("/audio/speech", json_body=body, accept="audio/wav", spool=spool))
        ctx.progress(90, "writing result")
        target = work_dir / "speech.wav"
        try:
            frames, rate = self._save_wav(answer, target)
        finally:
            spool.unlink(missing_ok=True)
        duration = frames / rate
        ctx.log_safe("info", f"{self._label} spoke {len(text)} characters: {duration:.1f} s of speech at {rate} Hz")
        ctx.progress(100, "writing result")
        meta: dict[str, Any] = {
            "duration_seconds": round(duration, 3),
            "voice": voice.strip(),
            "language": language.strip().replace("_", "-").lower(),
        }
        return EngineResult(files=[target], meta=meta)

    def _save_wav(self, answer: _Answer, target: Path) -> tuple[int, int]:
        """Check that the answer (spooled to a file) is a PCM WAV with audio and copy its
        frames to ``target`` with a consistent header (streamed WAVs often carry
        0xFFFFFFFF sizes), a block at a time.  Returns ``(frames, sample_rate)``.

        Raises:
            EngineError: not a readable PCM WAV, or no audio frames.
        """
        what = f"{self._label} answered audio that is not a PCM WAV file (content-type {answer.content_type or 'none'})"
        source = answer.spool
        frames = 0
        try:
            with (
                open(source, "rb") if source is not None else io.BytesIO(answer.body) as raw,
                wave.open(raw, "rb") as reader,
            ):
                params = reader.getparams()
                frame_bytes = params.nchannels * params.sampwidth
                if frame_bytes <= 0 or params.framerate <= 0:
                    raise EngineError(f"{self._label} answered a WAV file without audio")
                with atomic_output(target, "wb") as handle, wave.open(handle, "wb") as writer:
                    writer.setnchannels(params.nchannels)
                    writer.setsampwidth(params.sampwidth)
                    writer.setframerate(params.framerate)
                    carry = b""
                    while True:
                        chunk = reader.readframes(65536)
                        if not chunk:
                            break
                        chunk = carry + chunk
                        whole = len(chunk) - len(chunk) % frame_bytes
                        carry = chunk[whole:]
                        writer.writeframes(chunk[:whole])
                        frames += whole // frame_bytes
                    if frames == 0:
                        raise EngineError(f"{self._label} answered a WAV file without audio")
        except (wave.Error, EOFError) as exc:
            log.warning("%s: unreadable WAV answer: %s", self._label, exc)
            raise EngineError(what, detail=str(exc)) from None
        return frames, params.framerate

    # -- ai_stories ----------------------------------------------------------------------

    def _story(self, ctx: EngineContext, work_dir: Path) -> EngineResult:
        prompt, length, style, seed = _story_parameters(ctx.parameters or {})
        kind = f"{style} story" if style else "story"
        system = (
            f"You are a storyteller. Write a {kind} of about {length} words about what the user asks for. "
            "Answer with the story text only: no title, no preamble, no notes."
        )
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            "seed": seed,
            "max_tokens": min(16384, 2 * length + 64),
        }
        answer = self._post(ctx, _Call("/chat/completions", json_body=body))
        data = self._json_object(answer)
        text, finish = self._story_text(data)
        ctx.progress(90, "writing result")
        story = trim_to_length(text, length)
        if not story:
            raise EngineError(f"{self._label} answered an empty story (finish_reason {finish!r})")
        words = count_words(story)
        if words < 0.75 * length:
            ctx.log_safe("warning", f"the provider stopped at {words} words, short of the {length} asked for")
        usage = data.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("total_tokens"), int):
            ctx.log_safe("info", f"{self._label} used {usage.get('total_tokens')} tokens for a story of {words} words")
        answered = data.get("model")
        # the provider's text, bounded before it is stored
        model = " ".join(answered.split())[:200] if isinstance(answered, str) and answered.strip() else self.model
        meta: dict[str, Any] = {"text": story, "words": words, "seed": seed, "model": model, "length": length}
        story_path = work_dir / "story.txt"
        with atomic_output(story_path, "w", encoding="utf-8") as handle:
            handle.write(story + "\n")
        ctx.progress(100, "writing result")
        return EngineResult(files=[story_path], meta=meta)

    def _story_text(self, data: dict[str, Any]) -> tuple[str, Any]:
        """``(text, finish_reason)`` of the first choice of a chat completion."""
        choices = data.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if choice is None:
            raise EngineError(f"{self._label} answered a chat completion without choices")
        raw_finish = choice.get("finish_reason")
        finish = raw_finish if isinstance(raw_finish, str) and re.fullmatch(r"[a-z_]{1,40}", raw_finish) else None
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if finish == "content_filter" and not content:
            raise InvalidInput(f"{self._label} refused to write this story (content filter)")
        if not isinstance(content, str):
            raise EngineError(f"{self._label} answered a chat completion without text (finish_reason {finish!r})")
        return content.strip(), finish

    # -- HTTP ----------------------------------------------------------------------------

    def _post(self, ctx: EngineContext, call: _Call) -> _Answer:
        """POST ``call`` with retries; return the successful (2xx) answer.

        Raises:
            JobCancelled, RemoteEngineError, EngineError, InvalidInput: see :meth:`run`.
        """
        ctx.log_safe("info", f"POST {self._display_url(self.base_url + call.path)} (model {self.model}) on {self._label}")
        return _run_coroutine(lambda: self._post_async(ctx, call))

    async def _post_async(self, ctx: EngineContext, call: _Call) -> _Answer:
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

        def before(state: tenacity.RetryCallState) -> None:
            ctx.check_stop()

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            summary = exc.summary if isinstance(exc, _Transient) else repr(exc)
            delay = state.next_action.sleep if state.next_action is not None else 0.0
            ctx.log_safe(
                "warning",
                self._redact(
                    f"{self._label}: {summary} (attempt {state.attempt_number} of {self.max_retries + 1}); "
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

        headers = {"User-Agent": "aiorch-remote-engine"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0))
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Transient),
            before=before,
            before_sleep=before_sleep,
            sleep=sleep,
            reraise=True,
        )
        # trust_env=False: no proxy from the environment, so the connection goes to the
        # address that was checked (a proxy would resolve the name itself)
        async with httpx.AsyncClient(headers=headers, timeout=timeout, follow_redirects=False, trust_env=False) as client:
            try:
                async for attempt in retrying:
                    with attempt:
                        attempts += 1
                        progress(5, "uploading")
                        return await self._attempt(client, ctx, call, trace, attempts)
            except _Transient as exc:
                elapsed = loop.time() - started
                raise RemoteEngineError(
                    self._redact(
                        f"{self._label} is unavailable: {exc.summary} "
                        f"({attempts} attempt(s) over {elapsed:.1f} s; the job can be retried later)"
                    ),
                    status=exc.status,
                    attempts=attempts,
                    detail=exc.detail,
                ) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Seconds before the next attempt: the provider's Retry-After, else exponential
        backoff with jitter; both capped at ``backoff_cap_s``."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return min(exc.retry_after, self.backoff_cap_s)
        delay = self.backoff_s * 2 ** (state.attempt_number - 1) + random.uniform(0, self.backoff_s)
        return min(delay, self.backoff_cap_s)

    async def _attempt(
        self,
        client: httpx.AsyncClient,
        ctx: EngineContext,
        call: _Call,
        trace: Callable[[str, dict[str, Any]], Coroutine[Any, Any, None]],
        number: int,
    ) -> _Answer:
        """Attempt ``number`` (1-based): check the address, send one request, polled every
        0.1 s for cancellation and bounded by ``timeout_s``.

        Raises:
            _Transient: timeout, connection or name-resolution failure, or a transient HTTP status.
            JobCancelled / EngineError / InvalidInput: see :meth:`_check`; EngineError also
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
            log.warning("%s: cannot send the request: %s", self._label, self._redact(f"{type(exc).__name__}: {exc}"))
            raise EngineError(f"{self._label}: cannot send the request ({type(exc).__name__})") from None
        except httpx.TimeoutException as exc:
            raise _Transient(f"no answer within {self.timeout_s:g} s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            detail = self._redact(f"{type(exc).__name__}: {exc or 'no details'}")
            log.warning("%s: connection failed: %s", self._label, detail)
            raise _Transient(f"connection failed ({type(exc).__name__})", detail=detail) from None
        finally:
            if handle is not None:
                handle.close()
        return self._check(answer)

    async def _send(
        self,
        client: httpx.AsyncClient,
        call: _Call,
        files: dict[str, Any] | None,
        trace: Callable[[str, dict[str, Any]], Coroutine[Any, Any, None]],
        number: int,
    ) -> _Answer:
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
            _Transient: the name does not resolve now.
        """
        loop = asyncio.get_running_loop()
        try:
            target = await loop.run_in_executor(
                _RESOLVERS,
                lambda: check_url(url, allowed_networks=self.allowed_networks, resolve=True, resolver=self.resolver),
            )
        except OutboundRefused as exc:
            log.warning("%s: request refused by the outbound guard: base_url %s", self._label, exc.reason)
            raise EngineError(
                f"{self._label}: the provider's address is not allowed (not a public address); no request was sent",
                detail=f"base_url {exc.reason}",
            ) from None
        except OSError as exc:
            raise _Transient(f"cannot resolve {self.host} ({type(exc).__name__})") from None
        return pin_url(target, target.addresses[(number - 1) % len(target.addresses)], url)

    async def _exchange(self, client: httpx.AsyncClient, request: httpx.Request, call: _Call) -> _Answer:
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
        return _Answer(response.status_code, response.headers, bytes(body), spool)

    def _too_large(self, limit: int, what: str) -> EngineError:
        kind = "audio" if limit == MAX_AUDIO_BYTES else "JSON"
        log.warning("%s: answer refused: %s (limit %d bytes)", self._label, what, limit)
        return EngineError(f"{self._label} answered more than {limit // (1024 * 1024)} MiB, the limit for {kind} answers")

    async def _await_polling(self, ctx: EngineContext, task: asyncio.Future[_Answer]) -> _Answer:
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
                    raise _Transient(f"no answer within {self.timeout_s:g} s")
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _check(self, answer: _Answer) -> _Answer:
        """Return a 2xx answer; map any other status to an error.

        The error's message (the job's error, read by the owner and viewers) gives the
        status and a fixed phrase only; what the provider said is logged here and kept
        in ``detail``.

        Raises:
            EngineError: 401/403 (credentials), 429 ``insufficient_quota``, redirects,
                404 and other 4xx (not retryable).
            InvalidInput: 400, 413, 415, 422.
            _Transient: 408, 409, 425, 429 and 5xx (retried).
        """
        status = answer.status
        if 200 <= status < 300:
            return answer
        said, error_code = self._provider_message(answer)
        phrase = answer.phrase
        if 300 <= status < 400:
            location = self._display_url(answer.headers.get("location", ""))[:300]
            said = f"redirect to {location!r}"
        detail = f"{phrase}: {said}"
        log.warning("%s answered %s", self._label, detail)
        if status in (401, 403):
            raise EngineError(f"{self._label} refused the credentials ({phrase}); check the provider's API key", detail=detail)
        if status == 429 and error_code == "insufficient_quota":
            raise EngineError(f"{self._label} has no quota left ({phrase})", detail=detail)
        if status in _TRANSIENT_STATUS or status >= 500:
            raise _Transient(phrase, status=status, retry_after=_retry_after_seconds(answer.headers), detail=detail)
        if status in _INVALID_STATUS:
            raise InvalidInput(f"{self._label} rejected the request ({phrase})", detail=detail)
        if 300 <= status < 400:
            raise EngineError(f"{self._label} answered a redirect ({phrase}); set base_url to the final address", detail=detail)
        raise EngineError(f"{self._label} failed the request ({phrase})", detail=detail)

    def _provider_message(self, answer: _Answer) -> tuple[str, str | None]:
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
        return self._redact(" ".join(str(message).split())[:1000]), code

    def _json_object(self, answer: _Answer) -> dict[str, Any]:
        """The answer's body as a JSON object.

        Raises:
            EngineError: the body is not a JSON object.
        """
        try:
            data = json.loads(answer.body)
        except ValueError:
            snippet = " ".join(answer.body[:200].decode("utf-8", errors="replace").split())
            log.warning("%s answered %s with a body that is not JSON: %r", self._label, answer.phrase, self._redact(snippet))
            raise EngineError(
                f"{self._label} answered {answer.phrase} with a body that is not JSON", detail=self._redact(snippet)
            ) from None
        if not isinstance(data, dict):
            raise EngineError(f"{self._label} answered {answer.phrase} with JSON that is not an object")
        return data

    def _redact(self, text: str) -> str:
        """``text`` with the API key replaced by ``[redacted]``."""
        return text.replace(self._api_key, _REDACTED) if self._api_key else text

    def _display_url(self, url: str) -> str:
        """``url`` without user info, query or fragment (they may carry credentials)."""
        try:
            parts = urlsplit(url)
            netloc = parts.netloc.rsplit("@", 1)[-1]
            shown = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else url
        except ValueError:
            shown = url
        return self._redact(shown)


# -- parameters and answers ----------------------------------------------------------------


def _audio_input(ctx: EngineContext) -> Path:
    """The audio file of an stt job (field ``input_file``, ``audio`` or ``file``, or the
    only file).  Raises InvalidInput when absent, missing or empty."""
    files = ctx.input_files or {}
    name = next((f for f in _AUDIO_FIELDS if f in files), None)
    if name is None:
        if len(files) != 1:
            raise InvalidInput(f"STT needs one audio input in field 'input_file'; got fields {sorted(files)}")
        name = next(iter(files))
    path = Path(files[name])
    if not path.is_file():
        raise InvalidInput(f"input file {path.name!r} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise InvalidInput(f"input file {path.name!r} is empty")
    return path


def _local_duration(path: Path) -> float | None:
    """Seconds of the input, measured before the upload: stdlib ``wave`` for WAV files,
    PyAV when it is installed for other formats; None when unknown (the job's limit is
    then checked against the duration the provider reports)."""
    try:
        with wave.open(str(path), "rb") as reader:
            rate = reader.getframerate()
            return reader.getnframes() / rate if rate else None
    except (wave.Error, EOFError, OSError):
        pass
    if importlib.util.find_spec("av") is None:
        return None
    try:
        return probe_media(path, "input_file").duration
    except EngineError:  # PyAV cannot read it: let the provider judge the file
        return None


def _requested_language(value: Any) -> str | None:
    """The stt ``language`` parameter as a base code, or None for auto-detection.

    Raises:
        InvalidInput: not a string, or not shaped like a language code.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"parameter 'language' must be a string, got {type(value).__name__}")
    text = value.strip().lower()
    if text in ("", "auto", "detect"):
        return None
    if not _LANG_RE.match(text):
        raise InvalidInput(f"parameter 'language' must be a language code like 'en' or 'fr-FR', or 'auto'; got {value!r}")
    return re.split(r"[-_]", text, maxsplit=1)[0]


def _number(value: Any, default: float = 0.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _word_dict(word: dict[str, Any]) -> dict[str, Any]:
    return {
        "start": round(_number(word.get("start")), 3),
        "end": round(_number(word.get("end")), 3),
        "word": str(word.get("word", "")).strip(),
    }


def _stt_meta(data: dict[str, Any], requested: str | None) -> dict[str, Any]:
    """Map an OpenAI ``verbose_json`` transcription (``{text, language, duration,
    segments: [{start, end, text, words?}], words?: [{word, start, end}]}``; only
    ``text`` is required) to the stt meta shape."""
    listed_segments = data.get("segments")
    raw_segments = listed_segments if isinstance(listed_segments, list) else []
    listed_words = data.get("words")
    raw_words = [w for w in listed_words if isinstance(w, dict)] if isinstance(listed_words, list) else []
    segments: list[dict[str, Any]] = []
    for raw in raw_segments:
        if not isinstance(raw, dict):
            continue
        segment: dict[str, Any] = {
            "start": round(_number(raw.get("start")), 3),
            "end": round(_number(raw.get("end")), 3),
            "text": str(raw.get("text", "")).strip(),
        }
        if isinstance(raw.get("words"), list):
            segment["words"] = [_word_dict(w) for w in raw["words"] if isinstance(w, dict)]
        segments.append(segment)
    if raw_words and segments and not any("words" in s for s in segments):
        # Top-level word timings: give each word to the segment it starts in.
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            segment["words"] = [
                _word_dict(w)
                for w in raw_words
                if segment["start"] <= _number(w.get("start"))
                and (last or _number(w.get("start")) < segments[index + 1]["start"])
            ]
    text = data.get("text")
    transcript = " ".join(text.split()) if isinstance(text, str) else " ".join(s["text"] for s in segments if s["text"])
    duration = _number(data.get("duration"), segments[-1]["end"] if segments else 0.0)
    if not segments and transcript:
        segments = [{"start": 0.0, "end": round(duration, 3), "text": transcript}]
        if raw_words:
            segments[0]["words"] = [_word_dict(w) for w in raw_words]
    return {
        "transcript": transcript,
        "language": whisper_language_code(data.get("language")) or requested or "",
        "duration_seconds": round(duration, 3),
        "segments": segments,
    }


def _tts_text(ctx: EngineContext) -> str:
    """The text to speak: parameter ``text``, else a UTF-8 file in ``input_file``."""
    text = ctx.parameters.get("text")
    if text is None:
        files = ctx.input_files or {}
        path = next((Path(files[f]) for f in _TEXT_FIELDS if f in files), None)
        if path is None:
            raise InvalidInput("text-to-speech needs parameter 'text' (or a UTF-8 text file in 'input_file')")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"input file {path.name!r} is not UTF-8 text: {exc.reason}") from exc
        except OSError as exc:
            raise InvalidInput(f"cannot read input file {path.name!r}: {exc.strerror or exc}") from exc
    if not isinstance(text, str):
        raise InvalidInput(f"parameter 'text' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInput("parameter 'text' is empty")
    return text.strip()


def _story_parameters(params: dict[str, Any]) -> tuple[str, int, str, int]:
    """``(prompt, length, style, seed)`` checked as the local story engine does.

    Raises:
        InvalidInput: missing/too long prompt, bad length/style/seed, or ``narrate``.
    """
    from processors.engines.stories import story_parameters

    prompt, length, style, seed, narrate = story_parameters(params)
    if narrate:
        raise InvalidInput("narrated stories need the local engines; a remote provider writes the text only")
    return prompt, length, style, seed


def build_remote_engine(job_type: str, provider: dict[str, Any]) -> OpenAICompatibleEngine:
    """An engine for ``job_type`` on ``provider``.

    Args:
        job_type: the job type to serve (types the provider cannot serve fail at run
            time with InvalidInput, so engines can be built for any job).
        provider: ``{"kind": "openai_compatible", "base_url": str, "api_key": str | None,
            "name": str, "model": str | None, "enabled": bool (default True)}``; the
            optional ``timeout_s``, ``max_retries``, ``backoff_s``, ``backoff_cap_s``,
            ``allowed_networks`` (CIDRs) and ``resolver`` are passed to the engine.

    Raises:
        InvalidInput: a kind other than ``openai_compatible``, a disabled provider, or
            no ``base_url``.
    """
    name = str(provider.get("name") or provider.get("base_url") or "unnamed")
    kind = provider.get("kind")
    if kind != "openai_compatible":
        raise InvalidInput(f"provider {name!r} is of kind {kind!r}; only 'openai_compatible' providers run jobs remotely")
    if provider.get("enabled", True) is False:
        raise InvalidInput(f"provider {name!r} is disabled")
    base_url = provider.get("base_url")
    if not isinstance(base_url, str) or not base_url.strip():
        raise InvalidInput(f"provider {name!r} has no base_url")
    model = provider.get("model")
    tuning = {k: provider[k] for k in ("timeout_s", "max_retries", "backoff_s", "backoff_cap_s") if provider.get(k) is not None}
    guard = {k: provider[k] for k in ("allowed_networks", "resolver") if provider.get(k) is not None}
    return OpenAICompatibleEngine(
        job_type,
        base_url,
        provider.get("api_key") or None,
        model=model.strip() if isinstance(model, str) and model.strip() else None,
        provider_name=str(provider["name"]) if provider.get("name") else None,
        **tuning,
        **guard,
    )
