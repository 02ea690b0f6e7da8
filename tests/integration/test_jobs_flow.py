"""The whole path on real services: HTTP → commands → store → relay → Kafka → processor
running real engines → projections → HTTP."""

from __future__ import annotations

import io
import wave
from typing import Any

import pytest

from tests.conftest import SHARED_DATA, wait_until
from tests.support import wer

LIBRIVOX = SHARED_DATA / "speech" / "librivox-0870.wav"
LIBRIVOX_TEXT = (
    "and mister john dashwood had then leisure to consider how much there might be prudently in his power to do for them"
)

pytestmark = pytest.mark.skipif(not LIBRIVOX.exists(), reason=f"real recordings not found in {SHARED_DATA}")


def submit_stt(client: Any, project: str, path: Any, **params: Any) -> dict[str, Any]:
    import json

    with open(path, "rb") as f:
        resp = client.post(
            "/api/jobs/",
            data={"project": project, "type": "stt", "parameters": json.dumps(params)},
            files={"input_file": (path.name, f, "audio/wav")},
        )
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


BOTH_STORES = pytest.mark.parametrize("blob_backend", ["local", "s3"], indirect=True)


@BOTH_STORES
def test_stt_job_over_http_transcribes_real_speech(platform_up: dict[str, Any]) -> None:
    editor = platform_up["clients"]["editor"]
    job = submit_stt(editor, platform_up["project"], LIBRIVOX)
    # the 201 shows the job once the read model holds it, and an idle processor may have
    # claimed it by then; as of its submission it was pending
    assert job["status"] in ("pending", "running"), job
    as_submitted = editor.get(f"/api/jobs/{job['id']}/", params={"as_of": job["created_at"]})
    assert as_submitted.status_code == 200, as_submitted.text
    assert as_submitted.json()["status"] == "pending"
    assert job["input_files"]["input_file"]["content_type"] == "audio/wav"
    assert job["input_files"]["input_file"]["size"] == LIBRIVOX.stat().st_size

    done = editor.wait_job(job["id"])
    assert done["status"] == "completed", done
    result = editor.get(f"/api/jobs/{job['id']}/result/").json()
    meta = result["meta"]
    assert meta["language"] == "en"
    assert abs(meta["duration_seconds"] - 7.1) < 0.2
    assert wer(LIBRIVOX_TEXT, meta["transcript"]) <= 0.10, meta["transcript"]
    assert meta["segments"] and all(s["start"] <= s["end"] for s in meta["segments"])
    # the input downloads back byte for byte
    assert editor.get(job["input_files"]["input_file"]["url"]).content == LIBRIVOX.read_bytes()


@BOTH_STORES
def test_tts_job_yields_wav_that_transcribes_back(platform_up: dict[str, Any], engines: dict[str, Any], tmp_path: Any) -> None:
    from processors.engines import EngineContext

    editor = platform_up["clients"]["editor"]
    text = "The quick brown fox jumps over the lazy dog. Event sourcing keeps every change."
    resp = editor.post("/api/jobs/", json={"project": platform_up["project"], "type": "tts", "parameters": {"text": text}})
    assert resp.status_code == 201, resp.text
    assert int(resp.headers["Aiorch-Position"]) > 0
    done = editor.wait_job(resp.json()["id"])
    assert done["status"] == "completed", done

    result = editor.get(f"/api/jobs/{done['id']}/result/").json()
    assert result["result_file"].endswith(".wav")
    download = editor.get(result["result_file_url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(download.content)) as w:
        duration = w.getnframes() / w.getframerate()
    words = len(text.split())
    assert 0.2 * words <= duration <= 1.0 * words, duration
    assert abs(duration - result["meta"]["duration_seconds"]) < 0.1

    wav = tmp_path / "speech.wav"
    wav.write_bytes(download.content)
    back = engines["stt"].run(
        EngineContext(job_id="check", parameters={"language": "en"}, input_files={"input_file": wav}, work_dir=tmp_path / "stt")
    )
    assert wer(text, back.meta["transcript"]) <= 0.20, back.meta["transcript"]

    # a ranged download answers 206 with just those bytes
    part = editor.get(result["result_file_url"], headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == download.content[:100]


def test_cancelling_a_running_job_stops_its_engine(platform_up: dict[str, Any], system: Any) -> None:
    editor = platform_up["clients"]["editor"]
    text = " ".join(f"This is sentence number {i} of a long text that keeps the engine busy." for i in range(80))
    job = editor.post("/api/jobs/", json={"project": platform_up["project"], "type": "tts", "parameters": {"text": text}}).json()
    editor.wait_job(job["id"], ("running",))
    wait_until(lambda: editor.get(f"/api/jobs/{job['id']}/").json()["progress"] > 0, 30, message="progress")
    resp = editor.post(f"/api/jobs/{job['id']}/cancel/")
    assert resp.status_code == 202
    assert resp.json()["status"] == "cancel_requested"
    done = editor.wait_job(job["id"], timeout=15)
    assert done["status"] == "cancelled"
    assert done["error"]["code"] == "cancelled"
    # the engine stopped at a checkpoint before completing: no full progress, no result
    assert done["progress"] < 100
    # it stays cancelled, and a second cancel is a conflict
    assert editor.post(f"/api/jobs/{job['id']}/cancel/").status_code == 409
    assert editor.get(f"/api/jobs/{job['id']}/result/").status_code == 404


def test_cancelling_a_pending_job_is_immediate(runner: Any, system: Any) -> None:
    from infra.roles import create_user
    from tests.conftest import Client

    runner.projector()
    base = runner.api()  # no processor: the job stays pending
    create_user(system, "ed", "ed-password", "editor")
    proj = system.projector()
    wait_until(lambda: proj.position() >= (system.platform.recorder.max_notification_id() or 0))
    ed = Client(base, "ed", "ed-password")
    project = ed.post("/api/projects/", json={"name": "p"}).json()["id"]
    job = ed.post("/api/jobs/", json={"project": project, "type": "tts", "parameters": {"text": "hi"}}).json()
    resp = ed.post(f"/api/jobs/{job['id']}/cancel/")
    assert resp.json()["status"] == "cancelled"
    got = ed.get(f"/api/jobs/{job['id']}/", params={"min_position": resp.json()["position"]}).json()
    assert got["status"] == "cancelled"
