"""Remote engine: runs stt, tts and ai_stories jobs on an OpenAI-compatible HTTP provider
(OpenAI itself, or any server that speaks the same API: /audio/transcriptions,
/audio/speech, /chat/completions), and maps the answers to the result shapes of the
local engines, so a job's result looks the same wherever it ran.

Each request runs on a private asyncio event loop (httpx.AsyncClient) while the calling
thread's loop polls ``ctx.should_stop()`` every 0.1 s: a cancel aborts the request
(the connection is closed) and raises EngineCancelled within about 0.1 s, even when the
provider hangs.  Transient failures (429, 408, 409, 425, 5xx, connection errors,
timeouts) are retried by tenacity with exponential backoff and jitter, honouring
``Retry-After``; a provider that stays unavailable fails the job with
RemoteEngineError (retryable: the job is retried later).  Refused credentials and other
configuration errors fail it with EngineError (not retryable), and requests the
provider rejects (400/413/415/422) with InvalidInput.  The API key is only ever sent in
the Authorization header; it is redacted from every message this module produces.

Outbound guard (commands.outbound, API.md "Outbound addresses"): before each attempt the
host of base_url is resolved (an injectable resolver) and every address checked; a
forbidden one fails the job with no request sent.  The request then goes to the checked
address itself (the URL carries the address, the Host header and TLS SNI/certificate
check carry the name), so DNS cannot answer differently between check and connect.
Redirects are not followed, environment proxies are not used.  Answers are streamed with
a size cap (JSON MAX_JSON_BYTES, audio MAX_AUDIO_BYTES straight to a file, error bodies
MAX_ERROR_BYTES), and what a provider says is never quoted in a job's error or logs (the
owner and viewers read them): those carry the status and a fixed phrase; the provider's
words go to the processor's log (and EngineError.detail).

Modules: ``engine`` (the engine and its builder), ``client`` (HTTP with retries, the
outbound guard and size caps), ``answers`` (calls, answers, status -> error, redaction),
``languages``, and one adapter per job type: ``stt``, ``tts``, ``stories``.
"""

from __future__ import annotations

from .answers import RemoteEngineError
from .client import MAX_AUDIO_BYTES, MAX_ERROR_BYTES, MAX_JSON_BYTES
from .engine import DEFAULT_MODELS, REMOTE_JOB_TYPES, OpenAICompatibleEngine, build_remote_engine
from .languages import LANGUAGE_CODES as _LANGUAGE_CODES
from .languages import whisper_language_code
from .tts import DEFAULT_VOICE

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_VOICE",
    "MAX_AUDIO_BYTES",
    "MAX_ERROR_BYTES",
    "MAX_JSON_BYTES",
    "REMOTE_JOB_TYPES",
    "_LANGUAGE_CODES",
    "OpenAICompatibleEngine",
    "RemoteEngineError",
    "build_remote_engine",
    "whisper_language_code",
]
