from __future__ import annotations

# Integration tests of the remote-provider engine (processors.engines.remote) against a
# real HTTP server on loopback: a small FastAPI app under uvicorn, in a thread, that
# speaks the OpenAI API (/v1/audio/transcriptions, /v1/audio/speech,
# /v1/chat/completions), checks the bearer key, and can be scripted to fail: 429 with
# Retry-After, 503, 400 with an OpenAI error JSON, or hang.  Nothing leaves the machine.
#
# Run: pytest -q tests/integration/test_remote_provider.py   (about 10 s).
import asyncio
import io
import itertools
import json
import math
import struct
import sys
import threading
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import Recorder

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # pytest's rootdir is not on sys.path without a conftest
    sys.path.insert(0, str(REPO))

uvicorn = pytest.importorskip("uvicorn")
fastapi = pytest.importorskip("fastapi")
pytest.importorskip("multipart", reason="python-multipart is needed for the fake provider's uploads")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402

from infra.embedded import free_port  # noqa: E402
from processors.engines import EngineCancelled, EngineContext, EngineError, InvalidInput  # noqa: E402
from processors.engines.remote import (  # noqa: E402
    DEFAULT_MODELS,
    OpenAICompatibleEngine,
    RemoteEngineError,
    build_remote_engine,
    whisper_language_code,
)
from processors.engines.stt import WHISPER_LANGUAGES  # noqa: E402

API_KEY = "sk-test-0123456789abcdefSECRET"
LOOPBACK = ("127.0.0.0/8",)  # the fake provider is on loopback: admit it past the outbound guard
TONE_RATE = 24000  # Hz, like OpenAI's WAV output

TRANSCRIPTION = {
    "task": "transcribe",
    "language": "english",
    "duration": 2.5,
    "text": " Hello world. This is a test.",
    "segments": [
        {"id": 0, "seek": 0, "start": 0.0, "end": 1.2, "text": " Hello world.", "avg_logprob": -0.2},
        {"id": 1, "seek": 0, "start": 1.2, "end": 2.5, "text": " This is a test.", "avg_logprob": -0.3},
    ],
    "words": [
        {"word": "Hello", "start": 0.0, "end": 0.5},
        {"word": "world.", "start": 0.5, "end": 1.1},
        {"word": "This", "start": 1.3, "end": 1.5},
        {"word": "is", "start": 1.5, "end": 1.7},
        {"word": "a", "start": 1.7, "end": 1.8},
        {"word": "test.", "start": 1.8, "end": 2.4},
    ],
}


def tone_wav(seconds: float = 1.0, rate: int = TONE_RATE, freq: float = 440.0, streamed_header: bool = False) -> bytes:
    """A 16-bit mono WAV of a sine tone.  ``streamed_header`` sets the RIFF and data sizes
    to 0xFFFFFFFF, as servers that stream WAV do."""
    frames = int(seconds * rate)
    samples = (int(0.3 * 32767 * math.sin(2 * math.pi * freq * i / rate)) for i in range(frames))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(struct.pack(f"<{frames}h", *samples))
    data = bytearray(buffer.getvalue())
    if streamed_header:
        data[4:8] = b"\xff\xff\xff\xff"
        data[40:44] = b"\xff\xff\xff\xff"
    return bytes(data)


def story_text(words: int, seed: int) -> str:
    """A story of ``words`` words in sentences of ten words."""
    out: list[str] = []
    for i in range(words):
        word = f"w{seed % 97}x{i}"
        out.append(word + "." if i % 10 == 9 else word)
    return "Once " + " ".join(out[1:]) if out else ""


# -- the fake provider -----------------------------------------------------------------------


@dataclass
class Seen:
    """One request the fake provider received."""

    at: float
    path: str
    authorization: str | None
    form: dict[str, str] = field(default_factory=dict)
    file_name: str | None = None
    file_bytes: int = 0
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class Control:
    """How the fake provider answers: ``script`` behaviours are used one per request,
    then ``default``.  Behaviours: ``ok``, ``429``, ``503``, ``400``, ``quota`` (429
    insufficient_quota), ``hang`` (until ``release`` is set or ``hang_s`` passed)."""

    script: list[str] = field(default_factory=list)
    default: str = "ok"
    retry_after: str | None = "1"
    hang_s: float = 20.0
    streamed_wav: bool = False
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    hangs_ended: int = 0
    """Hung requests the provider has answered (after ``hang_s`` or a release)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_behaviour(self) -> str:
        with self.lock:
            return self.script.pop(0) if self.script else self.default


def openai_error(status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status, headers=headers)


def make_app(box: dict[str, Control]) -> FastAPI:
    """The fake provider; ``box["control"]`` is swapped by each test."""
    app = FastAPI()

    async def intake(request: Request) -> tuple[Seen, Response | None]:
        control = box["control"]
        seen = Seen(time.monotonic(), request.url.path, request.headers.get("authorization"))
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            async with request.form() as form:
                for key, value in form.multi_items():
                    if isinstance(value, str):
                        seen.form[key] = value
                    else:
                        seen.file_name = value.filename
                        seen.file_bytes = len(await value.read())
        elif content_type.startswith("application/json"):
            seen.body = await request.json()
        control.seen.append(seen)
        if seen.authorization != f"Bearer {API_KEY}":
            received = (seen.authorization or "").removeprefix("Bearer ")
            # Like OpenAI, the answer quotes the key it received: the engine must redact it.
            return seen, openai_error(401, f"Incorrect API key provided: {received}.", "invalid_api_key")
        behaviour = control.next_behaviour()
        headers = {"Retry-After": control.retry_after} if control.retry_after else None
        if behaviour == "429":
            return seen, openai_error(429, "Rate limit reached for requests", "rate_limit_exceeded", headers)
        if behaviour == "quota":
            return seen, openai_error(429, "You exceeded your current quota", "insufficient_quota")
        if behaviour == "503":
            return seen, openai_error(503, "The engine is currently overloaded, please try again later", None, headers)
        if behaviour == "400":
            return seen, openai_error(400, "Invalid file format. Supported formats: ['flac', 'mp3', 'wav']")
        if behaviour == "mp3":
            return seen, Response(b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(200), media_type="audio/mpeg")
        if behaviour == "hang":
            release, deadline = control.release, time.monotonic() + control.hang_s
            while not release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            control.hangs_ended += 1
            return seen, openai_error(504, "hung request released")
        return seen, None

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        seen, failure = await intake(request)
        if failure is not None:
            return failure
        assert seen.form.get("response_format") == "verbose_json"
        return JSONResponse(TRANSCRIPTION)

    @app.post("/v1/audio/translations")
    async def translations(request: Request) -> Response:
        seen, failure = await intake(request)
        if failure is not None:
            return failure
        assert "language" not in seen.form
        return JSONResponse({**TRANSCRIPTION, "task": "translate"})

    @app.post("/v1/audio/speech")
    async def speech(request: Request) -> Response:
        seen, failure = await intake(request)
        if failure is not None:
            return failure
        if seen.body.get("response_format") != "wav":
            return openai_error(400, "this fake provider only answers WAV")
        return Response(tone_wav(streamed_header=box["control"].streamed_wav), media_type="audio/wav")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        seen, failure = await intake(request)
        if failure is not None:
            return failure
        seed = int(seen.body.get("seed", 0))
        system = seen.body["messages"][0]["content"]
        wanted = int(next(w for w in system.split("about ", 1)[1].split() if w.isdigit()))
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": "fake-story-1",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": story_text(wanted, seed)}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 40, "completion_tokens": 2 * wanted, "total_tokens": 40 + 2 * wanted},
            }
        )

    return app


@dataclass
class Provider:
    """The running fake provider."""

    base_url: str
    box: dict[str, Control]

    @property
    def control(self) -> Control:
        return self.box["control"]


@pytest.fixture(scope="module")
def provider_server() -> Iterator[Provider]:
    box = {"control": Control()}
    port = free_port()
    config = uvicorn.Config(make_app(box), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-provider", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the fake provider did not start"
        time.sleep(0.02)
    yield Provider(f"http://127.0.0.1:{port}/v1", box)
    box["control"].release.set()
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def provider(provider_server: Provider) -> Iterator[Provider]:
    """The fake provider with a fresh Control for this test (hung requests released after)."""
    provider_server.box["control"] = Control()
    yield provider_server
    provider_server.control.release.set()


# -- helpers --------------------------------------------------------------------------------


def make_ctx(
    work_dir: Path,
    parameters: dict[str, Any] | None = None,
    input_file: Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    recorder: Recorder | None = None,
) -> EngineContext:
    rec = recorder or Recorder()
    return EngineContext(
        job_id=work_dir.name,
        parameters=parameters or {},
        input_files={"input_file": input_file} if input_file is not None else {},
        work_dir=work_dir,
        report=rec.report,
        log=rec.log,
        should_stop=should_stop or (lambda: False),
    )


def stop_when(condition: Callable[[], bool]) -> tuple[Callable[[], bool], list[bool]]:
    """A should_stop that answers ``condition()``, and the list of its answers so far."""
    answers: list[bool] = []

    def should_stop() -> bool:
        answers.append(condition())
        return answers[-1]

    return should_stop, answers


@pytest.fixture
def settings(settings: Any) -> Any:
    """The system's settings, with the fake provider's network allowed."""
    return settings.model_copy(update={"provider_allowed_networks": ",".join(LOOPBACK)})


def engine(provider: Provider, job_type: str, **kwargs: Any) -> OpenAICompatibleEngine:
    options: dict[str, Any] = {
        "timeout_s": 5.0,
        "max_retries": 3,
        "backoff_s": 0.05,
        "backoff_cap_s": 1.0,
        "allowed_networks": LOOPBACK,
    }
    options.update(kwargs)
    api_key = options.pop("api_key", API_KEY)
    return OpenAICompatibleEngine(job_type, provider.base_url, api_key, provider_name="fake", **options)


def intervals(seen: list[Seen]) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(seen)]


@pytest.fixture
def tone_file(tmp_path: Path) -> Path:
    path = tmp_path / "input" / "tone.wav"
    path.parent.mkdir()
    path.write_bytes(tone_wav(2.5, rate=16000))
    return path


# -- success paths ----------------------------------------------------------------------------


def test_stt_maps_verbose_json_to_the_stt_meta(provider: Provider, tmp_path: Path, tone_file: Path) -> None:
    rec = Recorder()
    ctx = make_ctx(tmp_path / "job", {"language": "en-US"}, tone_file, recorder=rec)
    result = engine(provider, "stt").run(ctx)

    meta = result.meta
    assert meta["transcript"] == "Hello world. This is a test."
    assert meta["language"] == "en"  # the provider said "english"
    assert meta["duration_seconds"] == pytest.approx(2.5)
    assert [s["text"] for s in meta["segments"]] == ["Hello world.", "This is a test."]
    assert [(s["start"], s["end"]) for s in meta["segments"]] == [(0.0, 1.2), (1.2, 2.5)]
    assert [w["word"] for w in meta["segments"][0]["words"]] == ["Hello", "world."]
    assert [w["word"] for w in meta["segments"][1]["words"]] == ["This", "is", "a", "test."]
    assert [p.name for p in result.files] == ["transcript.txt", "transcript.json"]
    assert result.files[0].read_text(encoding="utf-8") == "Hello world. This is a test.\n"
    assert json.loads(result.files[1].read_text(encoding="utf-8")) == meta

    (seen,) = provider.control.seen
    assert seen.path == "/v1/audio/transcriptions"
    assert seen.authorization == f"Bearer {API_KEY}"
    assert seen.form == {"model": "whisper-1", "response_format": "verbose_json", "language": "en"}
    assert seen.file_name == "tone.wav"
    assert seen.file_bytes == tone_file.stat().st_size
    assert rec.stages == ["uploading", "waiting for provider", "writing result"]
    assert rec.reports[-1] == (100, "writing result")
    assert [p for p, _ in rec.reports] == sorted(p for p, _ in rec.reports)
    assert not any(API_KEY in message for _, message in rec.logs)


def test_stt_translate_and_the_duration_limit(provider: Provider, tmp_path: Path, tone_file: Path) -> None:
    with pytest.raises(InvalidInput, match="limit for this job is 1 s"):
        engine(provider, "stt").run(make_ctx(tmp_path / "long", {"_max_input_duration_s": 1}, tone_file))
    assert provider.control.seen == []  # a WAV input is measured before the upload

    result = engine(provider, "stt").run(make_ctx(tmp_path / "tr", {"task": "translate", "language": "fr"}, tone_file))
    assert result.meta["transcript"] == "Hello world. This is a test."
    (seen,) = provider.control.seen
    assert seen.path == "/v1/audio/translations"
    assert "language" not in seen.form


def test_unknown_endpoint_is_a_configuration_error(provider: Provider, tmp_path: Path) -> None:
    eng = OpenAICompatibleEngine(
        "tts", provider.base_url.replace("/v1", "/v2"), API_KEY, backoff_s=0.01, allowed_networks=LOOPBACK
    )
    with pytest.raises(EngineError, match="HTTP 404") as caught:
        eng.run(make_ctx(tmp_path / "job", {"text": "Hi."}))
    assert type(caught.value) is EngineError
    assert not getattr(caught.value, "retryable", False)


@pytest.mark.parametrize("streamed", [False, True], ids=["sized-header", "streamed-header"])
def test_tts_saves_a_wav_and_measures_it(provider: Provider, tmp_path: Path, streamed: bool) -> None:
    provider.control.streamed_wav = streamed
    rec = Recorder()
    ctx = make_ctx(tmp_path / "job", {"text": "Hello there.", "voice": "nova"}, recorder=rec)
    result = engine(provider, "tts", model="tts-1-hd").run(ctx)

    assert result.meta == {"duration_seconds": pytest.approx(1.0), "voice": "nova", "language": "en"}
    (wav_path,) = result.files
    assert wav_path.name == "speech.wav"
    with wave.open(str(wav_path), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, TONE_RATE)
        assert reader.getnframes() == TONE_RATE  # header fixed even when streamed
    (seen,) = provider.control.seen
    assert seen.body == {"model": "tts-1-hd", "input": "Hello there.", "voice": "nova", "response_format": "wav"}
    assert rec.stages == ["uploading", "waiting for provider", "writing result"]


def test_ai_stories_meta_and_file(provider: Provider, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path / "job", {"prompt": "a lighthouse keeper", "length": 60, "style": "funny", "seed": 42})
    result = engine(provider, "ai_stories").run(ctx)

    meta = result.meta
    assert meta["seed"] == 42
    assert meta["model"] == "fake-story-1"
    assert meta["words"] == len(meta["text"].split())
    assert 45 <= meta["words"] <= 75
    assert meta["text"].endswith(".")
    (story_path,) = result.files
    assert story_path.name == "story.txt"
    assert story_path.read_text(encoding="utf-8") == meta["text"] + "\n"
    (seen,) = provider.control.seen
    assert seen.path == "/v1/chat/completions"
    assert seen.body["model"] == DEFAULT_MODELS["ai_stories"]
    assert seen.body["seed"] == 42
    assert seen.body["max_tokens"] >= 75
    system, user = seen.body["messages"]
    assert system["role"] == "system" and "about 60 words" in system["content"] and "funny" in system["content"]
    assert user == {"role": "user", "content": "a lighthouse keeper"}


def test_tts_refuses_audio_that_is_not_wav(provider: Provider, tmp_path: Path) -> None:
    provider.control.script = ["mp3"]
    with pytest.raises(EngineError, match="not a PCM WAV file") as caught:
        engine(provider, "tts").run(make_ctx(tmp_path / "job", {"text": "Hi."}))
    assert type(caught.value) is EngineError
    assert "audio/mpeg" in caught.value.message
    assert not (tmp_path / "job" / "speech.wav").exists()


def test_runs_when_the_calling_thread_already_runs_an_event_loop(provider: Provider, tmp_path: Path) -> None:
    async def main() -> dict[str, Any]:
        return engine(provider, "tts").run(make_ctx(tmp_path / "job", {"text": "Hi."})).meta

    assert asyncio.run(main())["duration_seconds"] == pytest.approx(1.0)


# -- retries ----------------------------------------------------------------------------------


def test_429_with_retry_after_is_retried_after_the_asked_delay(provider: Provider, tmp_path: Path) -> None:
    provider.control.script = ["429", "429"]
    provider.control.retry_after = "1"
    rec = Recorder()
    result = engine(provider, "tts", backoff_cap_s=8.0).run(make_ctx(tmp_path / "job", {"text": "Hi."}, recorder=rec))

    assert result.meta["duration_seconds"] == pytest.approx(1.0)
    seen = provider.control.seen
    assert len(seen) == 3
    # each retry waited what the provider asked for: the engine planned 1 s, and the
    # provider saw the next request no sooner (from the provider's own request times)
    warnings = [m for level, m in rec.logs if level == "warning"]
    assert len(warnings) == 2 and all("HTTP 429" in m and "retrying in 1.00 s" in m for m in warnings)
    for gap in intervals(seen):
        assert gap >= 0.9, intervals(seen)


def test_retry_after_is_capped(provider: Provider, tmp_path: Path) -> None:
    provider.control.script = ["429"]
    provider.control.retry_after = "30"
    rec = Recorder()
    engine(provider, "tts", backoff_cap_s=0.3).run(make_ctx(tmp_path / "job", {"text": "Hi."}, recorder=rec))
    (gap,) = intervals(provider.control.seen)
    assert gap >= 0.25
    # the engine planned the capped wait, not the 30 s asked for
    (warning,) = [m for level, m in rec.logs if level == "warning"]
    assert "retrying in 0.30 s" in warning


def test_503_forever_gives_a_retryable_remote_error(provider: Provider, tmp_path: Path) -> None:
    provider.control.default = "503"
    provider.control.retry_after = None
    eng = engine(provider, "ai_stories", max_retries=3, backoff_s=0.1, backoff_cap_s=5.0)
    rec = Recorder()
    with pytest.raises(RemoteEngineError) as caught:
        eng.run(make_ctx(tmp_path / "job", {"prompt": "a storm", "length": 30}, recorder=rec))

    exc = caught.value
    assert exc.retryable is True and getattr(exc, "retryable", False) is True
    assert exc.code == "engine_error"
    assert exc.status == 503 and exc.attempts == 4
    assert "HTTP 503" in exc.message and "currently overloaded" in exc.detail and "'fake'" in exc.message
    seen = provider.control.seen
    assert len(seen) == 4  # max_retries + 1
    # backoff: the engine planned 0.1 * 2**(n-1) plus 0..0.1 of jitter before retry n (its
    # warnings), and the provider saw retry n no sooner (its own request times)
    planned = [float(m.split("retrying in ")[1].split(" s")[0]) for level, m in rec.logs if level == "warning"]
    assert len(planned) == 3, rec.logs
    for n, (delay, gap) in enumerate(zip(planned, intervals(seen), strict=True), start=1):
        base = 0.1 * 2 ** (n - 1)
        assert base - 0.005 <= delay <= base + 0.1 + 0.005, planned
        assert gap >= base * 0.9, intervals(seen)


def test_connection_refused_is_retried_then_retryable(tmp_path: Path) -> None:
    port = free_port()  # nobody listens there
    eng = OpenAICompatibleEngine(
        "tts", f"http://127.0.0.1:{port}/v1", API_KEY, max_retries=2, backoff_s=0.02, timeout_s=2.0, allowed_networks=LOOPBACK
    )
    rec = Recorder()
    with pytest.raises(RemoteEngineError, match="connection failed") as caught:
        eng.run(make_ctx(tmp_path / "job", {"text": "Hi."}, recorder=rec))
    assert caught.value.attempts == 3 and caught.value.status is None
    assert len([m for level, m in rec.logs if level == "warning"]) == 2


def test_timeout_gives_a_retryable_remote_error(provider: Provider, tmp_path: Path) -> None:
    provider.control.default = "hang"
    rec = Recorder()
    with pytest.raises(RemoteEngineError, match=r"no answer within 0\.4 s") as caught:
        engine(provider, "tts", timeout_s=0.4, max_retries=1, backoff_s=0.05).run(
            make_ctx(tmp_path / "job", {"text": "Hi."}, recorder=rec)
        )
    assert caught.value.retryable is True
    assert len(provider.control.seen) == 2
    # the second attempt came only after the first had waited out its timeout, and both
    # were given up while the provider still hung (it answers after hang_s, or when released)
    retries = [m for level, m in rec.logs if level == "warning" and "retrying" in m]
    assert len(retries) == 1 and "no answer within 0.4 s" in retries[0] and "attempt 1 of 2" in retries[0], retries
    assert provider.control.hangs_ended == 0


# -- errors that are not retried ------------------------------------------------------------


def test_refused_key_is_not_retryable_and_never_shown(provider: Provider, tmp_path: Path) -> None:
    wrong_key = "sk-wrong-key-do-not-leak-9876543210"
    rec = Recorder()
    with pytest.raises(EngineError) as caught:
        engine(provider, "stt", api_key=wrong_key).run(make_ctx(tmp_path / "job", {}, tmp_path / "missing.wav", recorder=rec))
    assert isinstance(caught.value, InvalidInput)  # the input is checked before any request
    assert provider.control.seen == []

    audio = tmp_path / "a.wav"
    audio.write_bytes(tone_wav(0.5))
    eng = engine(provider, "stt", api_key=wrong_key)
    with pytest.raises(EngineError) as caught:
        eng.run(make_ctx(tmp_path / "job2", {}, audio, recorder=rec))
    exc = caught.value
    assert type(exc) is EngineError
    assert getattr(exc, "retryable", False) is False
    assert "HTTP 401" in exc.message and "'fake'" in exc.message and "Incorrect API key provided" in exc.detail
    assert wrong_key not in str(exc) and wrong_key not in repr(exc) and wrong_key not in exc.detail
    assert "[redacted]" in exc.detail
    assert not any(wrong_key in message for _, message in rec.logs)
    assert wrong_key not in repr(eng) and wrong_key not in eng.name
    assert len(provider.control.seen) == 1  # not retried
    assert provider.control.seen[0].authorization == f"Bearer {wrong_key}"


def test_no_key_sends_no_authorization_header(provider: Provider, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="HTTP 401"):
        engine(provider, "tts", api_key=None).run(make_ctx(tmp_path / "job", {"text": "Hi."}))
    assert provider.control.seen[0].authorization is None


def test_400_is_invalid_input_with_the_providers_message(provider: Provider, tmp_path: Path, tone_file: Path) -> None:
    provider.control.script = ["400"]
    with pytest.raises(InvalidInput) as caught:
        engine(provider, "stt").run(make_ctx(tmp_path / "job", {}, tone_file))
    assert "HTTP 400" in caught.value.message
    assert "Invalid file format. Supported formats" in caught.value.detail
    assert caught.value.code == "invalid_input"
    assert len(provider.control.seen) == 1


def test_exhausted_quota_is_not_retried(provider: Provider, tmp_path: Path) -> None:
    provider.control.script = ["quota"]
    with pytest.raises(EngineError, match="no quota left") as caught:
        engine(provider, "tts").run(make_ctx(tmp_path / "job", {"text": "Hi."}))
    assert not getattr(caught.value, "retryable", False)
    assert len(provider.control.seen) == 1


def test_a_type_the_provider_does_not_serve(provider: Provider, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="the provider does not serve dubbing jobs"):
        engine(provider, "dubbing").run(make_ctx(tmp_path / "job", {}))
    assert provider.control.seen == []


# -- cancellation ---------------------------------------------------------------------------


def test_cancel_while_the_provider_hangs(provider: Provider, tmp_path: Path, tone_file: Path) -> None:
    provider.control.default = "hang"
    provider.control.hang_s = 60.0
    should_stop, answers = stop_when(lambda: len(provider.control.seen) >= 1)  # the request is in
    with pytest.raises(EngineCancelled):
        engine(provider, "stt", timeout_s=60.0).run(make_ctx(tmp_path / "job", {}, tone_file, should_stop=should_stop))
    assert answers[0] is False and answers.count(True) == 1  # not before the cancel, at its first checkpoint
    # stopped mid-request: before the provider answered and before the attempt timed out
    assert len(provider.control.seen) == 1
    assert provider.control.hangs_ended == 0


def test_cancel_between_retries(provider: Provider, tmp_path: Path) -> None:
    provider.control.default = "503"
    provider.control.retry_after = "60"
    rec = Recorder()
    should_stop, answers = stop_when(lambda: any("retrying in" in m for _, m in rec.logs))  # the wait began
    with pytest.raises(EngineCancelled):
        engine(provider, "tts", backoff_cap_s=60.0).run(
            make_ctx(tmp_path / "job", {"text": "Hi."}, should_stop=should_stop, recorder=rec)
        )
    # stopped during the planned 60 s wait, before the retry was due: no second request
    assert [m for level, m in rec.logs if level == "warning" and "retrying in 60.00 s" in m]
    assert len(provider.control.seen) == 1
    assert answers.count(True) == 1  # at the wait's first checkpoint after the cancel


def test_cancelled_before_start_sends_nothing(provider: Provider, tmp_path: Path) -> None:
    with pytest.raises(EngineCancelled):
        engine(provider, "tts").run(make_ctx(tmp_path / "job", {"text": "Hi."}, should_stop=lambda: True))
    assert provider.control.seen == []


# -- construction ---------------------------------------------------------------------------


def test_build_remote_engine(provider: Provider, tmp_path: Path) -> None:
    config = {
        "kind": "openai_compatible",
        "base_url": provider.base_url + "/",
        "api_key": API_KEY,
        "name": "fake",
        "allowed_networks": LOOPBACK,
    }
    eng = build_remote_engine("tts", {**config, "model": "tts-1-hd"})
    assert (eng.type, eng.model, eng.has_api_key) == ("tts", "tts-1-hd", True)
    assert eng.name == f"openai-compatible:{provider.base_url.split('/')[2]}"
    assert API_KEY not in repr(eng)
    assert build_remote_engine("stt", {**config, "model": None}).model == "whisper-1"
    assert build_remote_engine("ai_stories", {**config, "enabled": True, "api_key": ""}).has_api_key is False
    eng.run(make_ctx(tmp_path / "job", {"text": "Hi."}))  # trailing slash of base_url is fine

    with pytest.raises(InvalidInput, match="kind 'local'"):
        build_remote_engine("tts", {**config, "kind": "local"})
    with pytest.raises(InvalidInput, match="disabled"):
        build_remote_engine("tts", {**config, "enabled": False})
    with pytest.raises(InvalidInput, match="no base_url"):
        build_remote_engine("tts", {**config, "base_url": ""})
    bad = build_remote_engine("tts", {**config, "base_url": "ftp://example.org/v1"})
    with pytest.raises(InvalidInput, match="not an http"):
        bad.run(make_ctx(tmp_path / "bad", {"text": "Hi."}))


def test_language_names_map_to_whisper_codes() -> None:
    assert whisper_language_code("english") == "en"
    assert whisper_language_code("Haitian Creole") == "ht"
    assert whisper_language_code("pt-BR") == "pt"
    assert whisper_language_code("") is None
    from processors.engines.remote import _LANGUAGE_CODES

    assert set(_LANGUAGE_CODES.values()) == set(WHISPER_LANGUAGES)


# -- through the whole system ---------------------------------------------------------------


def test_a_job_whose_agent_names_the_provider_runs_there(provider: Provider, platform_up: dict[str, Any], system: Any) -> None:
    """Provider (admin) → agent (editor) → job: the processor runs it on the remote provider,
    with the key decrypted only in the processor, and the result comes back like a local one."""
    admin, editor = platform_up["clients"]["admin"], platform_up["clients"]["editor"]
    created = admin.post(
        "/api/providers/", json={"name": "fake", "kind": "openai_compatible", "base_url": provider.base_url, "api_key": API_KEY}
    )
    assert created.status_code == 201, created.text
    agent = editor.post(
        "/api/agents/", json={"name": "remote voice", "type": "tts", "configuration": {}, "provider": created.json()["id"]}
    )
    assert agent.status_code == 201, agent.text
    job = editor.post(
        "/api/jobs/",
        json={
            "project": platform_up["project"],
            "type": "tts",
            "agent": agent.json()["id"],
            "parameters": {"text": "Served by a remote provider."},
        },
    ).json()
    done = editor.wait_job(job["id"])
    assert done["status"] == "completed", done
    result = editor.get(f"/api/jobs/{job['id']}/result/").json()
    assert result["meta"]["voice"] == "alloy" and result["files"][0]["name"].endswith(".wav")
    assert any(s.path.endswith("/audio/speech") and s.authorization == f"Bearer {API_KEY}" for s in provider.control.seen)
