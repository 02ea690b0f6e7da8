"""The remote engine: one ``OpenAICompatibleEngine`` per job type and provider, and
``build_remote_engine`` that makes one from a provider's configuration."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from commands.outbound import Network, OutboundRefused, Resolver, check_url, parse_networks
from processors.engines.base import Engine, EngineContext, EngineResult, InvalidInput, prepare_work_dir

from .answers import display_url
from .client import ProviderClient
from .stories import write_story
from .stt import transcribe
from .tts import speak

__all__ = ["DEFAULT_MODELS", "REMOTE_JOB_TYPES", "OpenAICompatibleEngine", "build_remote_engine"]

REMOTE_JOB_TYPES: tuple[str, ...] = ("stt", "tts", "ai_stories")
"""Job types an OpenAI-compatible provider can serve."""

DEFAULT_MODELS: dict[str, str] = {"stt": "whisper-1", "tts": "tts-1", "ai_stories": "gpt-4o-mini"}
"""Model asked for when neither the engine nor the provider configuration names one."""

_ADAPTERS = {"stt": transcribe, "tts": speak, "ai_stories": write_story}


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
        self.allowed_networks = parse_networks(allowed_networks)
        self.resolver = resolver
        host, self._config_error = _check_base_url(self.base_url, self._api_key, self.allowed_networks)
        self.host = host or "invalid-url"
        self.name = f"openai-compatible:{self.host}"  # type: ignore[misc]  # per instance, like type
        self.provider_name = provider_name or self.host
        self._label = f"provider {self.provider_name!r}" + (f" ({self.host})" if provider_name else "")

    def __repr__(self) -> str:
        return (
            f"OpenAICompatibleEngine(type={self.type!r}, base_url={display_url(self.base_url, self._api_key)!r}, "
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

    def run(self, ctx: EngineContext) -> EngineResult:
        """Run one job on the provider; see the class docstring for shapes.

        Raises:
            InvalidInput: unusable input or parameters, a job type the provider does not
                serve, an unusable ``base_url``, or the provider rejected the request
                (HTTP 400/413/415/422; the message quotes the provider).
            EngineCancelled: ``ctx.should_stop()`` became True (checked every 0.1 s, also
                while a request is in flight and between retries).
            RemoteEngineError: the provider stayed unavailable (retryable).
            EngineError: the provider refused the credentials (401/403), answered
                something unusable, or another non-transient error (not retryable).
        """
        ctx.check_stop()
        adapter = _ADAPTERS.get(self.type)
        if adapter is None:
            raise InvalidInput(f"the provider does not serve {self.type} jobs (it serves {', '.join(REMOTE_JOB_TYPES)})")
        if self._config_error:
            raise InvalidInput(self._config_error)
        work_dir: Path = prepare_work_dir(ctx.work_dir)
        return adapter(self._client(), self.model, ctx, work_dir)

    def _client(self) -> ProviderClient:
        """A client with this engine's settings as they are now (tests swap ``resolver``)."""
        return ProviderClient(
            self.base_url,
            self._api_key,
            label=self._label,
            host=self.host,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            backoff_s=self.backoff_s,
            backoff_cap_s=self.backoff_cap_s,
            allowed_networks=self.allowed_networks,
            resolver=self.resolver,
        )


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


def _check_base_url(base_url: str, api_key: str | None, allowed_networks: tuple[Network, ...]) -> tuple[str, str | None]:
    """``(host[:port] or "", why the URL is unusable or None)`` of a provider's base URL:
    an http(s) URL with a host, whose address :func:`commands.outbound.check_url` allows."""
    parts = urlsplit(base_url)
    host = ""
    try:
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        host = ""
    if parts.scheme not in ("http", "https") or not host:
        return host, f"provider base_url {display_url(base_url, api_key)!r} is not an http(s) URL with a host"
    try:
        check_url(base_url, allowed_networks=allowed_networks)
    except OutboundRefused as exc:
        return host, f"provider base_url is refused: it {exc.reason}"
    return host, None
