"""Finding 7 (SSRF through a provider ``base_url``) and the provider/media parts of finding 11
(a provider answer buffered whole; ffmpeg and OpenCV opening untrusted media unguarded),
attacked against the real system.

Nothing leaves the machine: private and metadata addresses are only ever *created* (and
refused, nothing sent); the request-time check is exercised with an injected resolver that
maps a public-looking name to the loopback fake provider of this module.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import socket
import struct
import threading
import time
import wave
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("multipart")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, Response, StreamingResponse  # noqa: E402

from infra.embedded import free_port  # noqa: E402
from tests.conftest import wait_until  # noqa: E402

API_KEY = "sk-outbound-test-key-0123456789"
SECRET = "db-password=hunter2 internal-host=10.9.8.7"
MIB = 1024 * 1024


def tone_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    frames = int(seconds * rate)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(struct.pack(f"<{frames}h", *(int(9000 * math.sin(i / 8)) for i in range(frames))))
    return buffer.getvalue()


# -- a fake OpenAI-compatible provider on loopback ---------------------------------------------


@dataclass
class FakeProvider:
    """What the fake provider received, and how it answers (``behaviour`` per path)."""

    port: int = 0
    behaviour: dict[str, str] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def make_app(fake: FakeProvider) -> FastAPI:
    app = FastAPI()

    async def huge() -> AsyncIterator[bytes]:
        chunk = b" " * MIB
        yield b'{"text": "'
        for _ in range(512):  # 512 MiB, twice the old in-memory limit
            yield chunk

    @app.post("/v1/{path:path}")
    async def any_endpoint(path: str, request: Request) -> Response:
        await request.body()
        fake.seen.append(path)
        behaviour = fake.behaviour.get(path, "ok")
        if behaviour == "huge":
            return StreamingResponse(huge(), media_type="application/json")
        if behaviour == "secret":
            error = {"error": {"message": f"upstream failed: {SECRET} key {API_KEY}", "type": "invalid_request_error"}}
            return JSONResponse(error, 400)
        if path == "audio/speech":
            return Response(tone_wav(), media_type="audio/wav")
        return JSONResponse({"text": "hello", "language": "english", "duration": 1.0})

    return app


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeProvider]:
    fake = FakeProvider(port=free_port())
    config = uvicorn.Config(make_app(fake), host="127.0.0.1", port=fake.port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-provider", daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, message="the fake provider to start")
    yield fake
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def fake(fake_server: FakeProvider) -> FakeProvider:
    fake_server.behaviour, fake_server.seen = {}, []
    return fake_server


@pytest.fixture
def settings(settings: Any, request: pytest.FixtureRequest) -> Any:
    """The system's settings; ``indirect`` parametrization sets AIORCH_PROVIDER_ALLOWED_NETWORKS."""
    networks = getattr(request, "param", "")
    return settings.model_copy(update={"provider_allowed_networks": networks}) if networks else settings


def processor_of(platform_up: dict[str, Any]) -> Any:
    threads = platform_up["runner"].threads
    return next(role for role, _ in threads if getattr(getattr(role, "policies", None), "remote_engine", None))


def remote_job(client: Any, project: str, agent: str, job_type: str, **extra: Any) -> dict[str, Any]:
    if job_type == "stt":
        resp = client.post(
            "/api/jobs/",
            data={"project": project, "type": "stt", "agent": agent, "parameters": "{}"},
            files={"input_file": ("tone.wav", tone_wav(), "audio/wav")},
        )
    else:
        resp = client.post("/api/jobs/", json={"project": project, "type": job_type, "agent": agent, **extra})
    assert resp.status_code in (201, 202), resp.text
    return dict(resp.json())


def provider_with_agent(admin: Any, editor: Any, base_url: str, job_type: str) -> str:
    provider = admin.post(
        "/api/providers/", json={"name": "remote", "kind": "openai_compatible", "base_url": base_url, "api_key": API_KEY}
    )
    assert provider.status_code == 201, provider.text
    agent = editor.post(
        "/api/agents/",
        json={"name": f"remote {job_type}", "type": job_type, "configuration": {}, "provider": provider.json()["id"]},
    )
    assert agent.status_code == 201, agent.text
    return str(agent.json()["id"])


def job_logs(client: Any, job_id: str) -> str:
    return json.dumps(client.get(f"/api/jobs/{job_id}/logs/").json())


# -- creation: refused, nothing sent; request time: re-checked on the resolved address --------


def test_private_and_metadata_base_urls_are_refused_and_names_rechecked_per_request(
    platform_up: dict[str, Any], fake: FakeProvider
) -> None:
    admin, editor, viewer = (platform_up["clients"][r] for r in ("admin", "editor", "viewer"))
    refused = [
        f"http://127.0.0.1:{fake.port}/v1",  # the fake provider itself: nothing may reach it
        "http://127.0.0.1:9/v1",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://metadata.google.internal/",
        "ftp://models.example.org/v1",
    ]
    for url in refused:
        resp = admin.post("/api/providers/", json={"name": "ssrf", "kind": "openai_compatible", "base_url": url})
        assert resp.status_code == 422, (url, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert any(e["loc"][-1] == "base_url" for e in resp.json()["errors"]), resp.json()
    assert admin.get("/api/providers/").json()["count"] == 0  # nothing stored

    # a public-looking name is accepted (names are judged when used) ...
    name_url = f"http://models.provider.test:{fake.port}/v1"
    agent = provider_with_agent(admin, editor, name_url, "tts")
    provider_id = admin.get("/api/providers/").json()["results"][0]["id"]
    # ... and an update to a private address is refused like a creation
    patched = admin.patch(f"/api/providers/{provider_id}/", json={"base_url": "http://192.168.1.1:8080/v1"})
    assert patched.status_code == 422 and patched.json()["errors"][0]["loc"][-1] == "base_url"

    # at request time the name resolves (injected resolver) to loopback: the attempt fails, nothing is sent
    resolved: list[str] = []

    def to_loopback(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    processor = processor_of(platform_up)
    engine_for = processor.policies.remote_engine

    def with_resolver(job: Any) -> Any:
        engine = engine_for(job)
        if engine is not None:
            engine.resolver = to_loopback
        return engine

    processor.policies = dataclasses.replace(processor.policies, remote_engine=with_resolver)
    job = remote_job(editor, platform_up["project"], agent, "tts", parameters={"text": "Hello."})
    done = viewer.wait_job(job["id"], timeout=90)
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "engine_error"
    assert "not allowed" in done["error"]["message"] and "no request was sent" in done["error"]["message"]
    assert resolved == ["models.provider.test"]
    assert fake.seen == []  # not one request reached the loopback server
    assert API_KEY not in json.dumps(done) and API_KEY not in job_logs(viewer, job["id"])


# -- a LAN provider (allowed network): answers capped, provider words never quoted ------------


@pytest.mark.parametrize("settings", ["127.0.0.0/8"], indirect=True)
def test_allowed_network_provider_answers_are_capped_and_never_quoted(
    platform_up: dict[str, Any], fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    admin, editor, viewer = (platform_up["clients"][r] for r in ("admin", "editor", "viewer"))
    project = platform_up["project"]
    stt_agent = provider_with_agent(admin, editor, fake.base_url, "stt")  # loopback admitted by the allowed network
    tts_agent = provider_with_agent(admin, editor, fake.base_url, "tts")

    # an endless JSON answer: cut at the cap, the job fails cleanly, memory stays bounded
    fake.behaviour["audio/transcriptions"] = "huge"
    rss = RssSampler()
    with rss:
        job = remote_job(editor, project, stt_agent, "stt")
        done = viewer.wait_job(job["id"], timeout=90)
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "engine_error"
    assert "answered more than 4 MiB" in done["error"]["message"] and len(done["error"]["message"]) < 200
    assert rss.growth < 64 * MIB, f"RSS grew by {rss.growth / MIB:.0f} MiB"
    assert fake.seen == ["audio/transcriptions"]  # one attempt: an oversized answer is not retried

    # an error body full of secrets: the job error says the status and a fixed phrase only
    fake.behaviour["audio/speech"] = "secret"
    with caplog.at_level(logging.WARNING, logger="processors.engines.remote"):
        job = remote_job(editor, project, tts_agent, "tts", parameters={"text": "Hello."})
        done = viewer.wait_job(job["id"], timeout=90)
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "invalid_input"
    assert "HTTP 400 Bad Request" in done["error"]["message"]
    shown = json.dumps(done) + job_logs(viewer, job["id"])
    for leaked in ("hunter2", "10.9.8.7", "upstream failed", API_KEY):
        assert leaked not in shown
    assert "hunter2" in caplog.text and API_KEY not in caplog.text  # the detail is in the processor log, redacted

    # the same provider answering normally still works
    fake.behaviour.clear()
    job = remote_job(editor, project, tts_agent, "tts", parameters={"text": "Hello."})
    assert viewer.wait_job(job["id"], timeout=90)["status"] == "completed"


class RssSampler:
    """Peak resident memory of this process (which runs the processor) above its level at entry."""

    def __init__(self) -> None:
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> RssSampler:
        self.base = self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth(self) -> int:
        return self.peak - self.base


# -- engine level: the audio cap, redirects --------------------------------------------------------


def test_oversized_audio_is_refused_from_its_content_length(tmp_path: Path) -> None:
    """A WAV answer announcing more than the audio cap fails at once, before its body is read."""
    from processors.engines import EngineContext, EngineError
    from processors.engines.remote import MAX_AUDIO_BYTES, OpenAICompatibleEngine

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            head = f"HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nContent-Length: {MAX_AUDIO_BYTES + 1}\r\n\r\n"
            conn.sendall(head.encode() + b"RIFF")
            time.sleep(2)

    threading.Thread(target=serve, daemon=True).start()
    engine = OpenAICompatibleEngine("tts", f"http://127.0.0.1:{port}/v1", API_KEY, allowed_networks=["127.0.0.1/32"])
    ctx = EngineContext(job_id="big", parameters={"text": "Hi."}, input_files={}, work_dir=tmp_path / "job")
    started = time.monotonic()
    with pytest.raises(EngineError, match="answered more than 64 MiB, the limit for audio answers"):
        engine.run(ctx)
    assert time.monotonic() - started < 2  # refused from the header, not after reading 64 MiB
    listener.close()


def test_engine_refuses_a_loopback_provider_without_an_allowed_network(tmp_path: Path) -> None:
    from processors.engines import EngineContext, InvalidInput
    from processors.engines.remote import build_remote_engine

    engine = build_remote_engine("tts", {"kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1", "name": "x"})
    ctx = EngineContext(job_id="j", parameters={"text": "Hi."}, input_files={}, work_dir=tmp_path / "job")
    with pytest.raises(InvalidInput, match="loopback"):
        engine.run(ctx)


# -- untrusted media: ffmpeg's protocol whitelist, OpenCV's pixel cap -----------------------------


def test_every_ffmpeg_input_is_restricted_to_file_and_pipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in ffmpeg (AIORCH_FFMPEG) records each command line the media helpers build."""
    from processors.engines import EngineContext, InvalidInput
    from processors.engines.media import decode_audio, run_ffmpeg, time_stretch

    np = pytest.importorskip("numpy")
    argv_log = tmp_path / "argv.jsonl"
    fake_ffmpeg = tmp_path / "ffmpeg"
    fake_ffmpeg.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"open({str(argv_log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\nsys.exit(1)\n"
    )
    fake_ffmpeg.chmod(0o755)
    monkeypatch.setenv("AIORCH_FFMPEG", str(fake_ffmpeg))
    ctx = EngineContext(job_id="media", parameters={}, input_files={}, work_dir=tmp_path)
    with pytest.raises(InvalidInput):
        decode_audio(tmp_path / "in.mp3", ctx, 16000, field="input_file", tmp_dir=tmp_path)
    with pytest.raises(Exception, match="ffmpeg failed"):
        run_ffmpeg(["-i", "a.mp4", "-i", "b.wav", "-map", "0:v", "out.mp4"], ctx, what="mux")
    with pytest.raises(Exception, match="ffmpeg failed"):
        time_stretch(np.zeros(1600, dtype=np.float32), 16000, 1.5, ctx, tmp_path)

    lines = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert len(lines) == 3
    for args in lines:
        inputs = [i for i, a in enumerate(args) if a == "-i"]
        assert inputs, args
        for i in inputs:
            assert args[i - 2 : i] == ["-protocol_whitelist", "file,pipe"], args


def test_a_playlist_pointing_at_a_url_is_refused_and_fetches_nothing(tmp_path: Path) -> None:
    """An HLS playlist disguised as an upload: refused as input, no connection to its URL."""
    pytest.importorskip("av")
    from processors.engines import EngineContext, InvalidInput
    from processors.engines.media import decode_audio, ffmpeg_status, probe_media

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    playlist = tmp_path / "song.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:{port}/seg.ts\n#EXT-X-ENDLIST\n")
    with pytest.raises(InvalidInput):
        probe_media(playlist, "input_file")
    if ffmpeg_status()[0]:
        ctx = EngineContext(job_id="hls", parameters={}, input_files={}, work_dir=tmp_path)
        with pytest.raises(InvalidInput):
            decode_audio(playlist, ctx, 16000, field="input_file", tmp_dir=tmp_path)
    with pytest.raises(TimeoutError):
        listener.accept()  # nobody connected
    listener.close()


def png_of(width: int, height: int) -> bytes:
    """A valid greyscale PNG of ``width`` x ``height`` black pixels (tiny once compressed)."""
    squeeze = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    data = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_a_portrait_over_the_pixel_cap_is_invalid_input(tmp_path: Path) -> None:
    from processors.engines import InvalidInput
    from processors.engines.talking_heads import MAX_IMAGE_PIXELS, TalkingHeadEngine

    pytest.importorskip("cv2")
    bomb = tmp_path / "portrait.png"
    bomb.write_bytes(png_of(9000, 6000))  # 54 Mpx in ~50 kB
    assert MAX_IMAGE_PIXELS < 9000 * 6000 and bomb.stat().st_size < 200_000
    rss = RssSampler()
    with rss, pytest.raises(InvalidInput, match=str(MAX_IMAGE_PIXELS)) as caught:
        TalkingHeadEngine._read_image(bomb)
    assert caught.value.code == "invalid_input"
    assert rss.growth < 100 * MIB  # refused before it was decoded (it would take 160 MB)

    fine = tmp_path / "small.png"
    fine.write_bytes(png_of(640, 480))
    assert TalkingHeadEngine._read_image(fine).shape == (480, 640, 3)
