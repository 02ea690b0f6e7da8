"""The README's run command, end to end: ``aiorch up`` with embedded PostgreSQL and broker,
then the walkthrough over HTTP with real speech and real text."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.embedded import free_port
from tests.conftest import SHARED_DATA, wait_until
from tests.support import wer

LIBRIVOX = SHARED_DATA / "speech" / "librivox-0880.wav"


@pytest.fixture
def aiorch_up(model_dir: Path) -> Any:
    data_dir = Path(tempfile.mkdtemp(prefix="aiorch-e2e-", dir="/tmp"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIORCH_")}
    env.update(AIORCH_DATA_DIR=str(data_dir), AIORCH_MODEL_DIR=str(model_dir), AIORCH_BOOTSTRAP_ADMIN="admin:admin-password")
    log = open(data_dir / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "up", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            assert proc.poll() is None, (data_dir / "up.log").read_text()
            return False

    wait_until(ready, 90, 0.5, "aiorch up to serve")
    yield base, data_dir, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    log.close()


def test_readme_walkthrough(aiorch_up: Any) -> None:
    base, data_dir, proc = aiorch_up
    runtime = json.loads((data_dir / "runtime.json").read_text())
    assert runtime["api_url"] == base and runtime["database_url"] and runtime["kafka_bootstrap_servers"]

    http = httpx.Client(base_url=base, timeout=30)
    tokens = http.post("/api/token/", json={"username": "admin", "password": "admin-password"}).json()
    http.headers["Authorization"] = f"Bearer {tokens['access']}"
    project = http.post("/api/projects/", json={"name": "Walkthrough"}).json()["id"]

    text = "Welcome to the platform. Every job keeps its full history."
    tts = http.post("/api/jobs/", json={"project": project, "type": "tts", "parameters": {"text": text}}).json()
    with open(LIBRIVOX, "rb") as f:
        stt = http.post(
            "/api/jobs/", data={"project": project, "type": "stt"}, files={"input_file": ("speech.wav", f, "audio/wav")}
        ).json()

    def finished(job_id: str) -> Any:
        job = http.get(f"/api/jobs/{job_id}/").json()
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    assert wait_until(lambda: finished(tts["id"]), 120, 0.5)["status"] == "completed"
    assert wait_until(lambda: finished(stt["id"]), 120, 0.5)["status"] == "completed"

    result = http.get(f"/api/jobs/{tts['id']}/result/").json()
    audio = http.get(result["result_file_url"])
    with wave.open(io.BytesIO(audio.content)) as w:
        assert w.getnframes() / w.getframerate() > 1.5
    transcript = http.get(f"/api/jobs/{stt['id']}/result/").json()["meta"]["transcript"]
    assert wer("he was not an ill disposed young man", transcript) <= 0.2, transcript

    # the CLI acts on the running system through runtime.json
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIORCH_")}
    env["AIORCH_DATA_DIR"] = str(data_dir)
    out = subprocess.run(
        [sys.executable, "-m", "infra.cli", "users", "create", "newbie", "--role", "viewer", "--password-stdin"],
        input="newbie-password\n",
        text=True,
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    wait_until(
        lambda: httpx.post(f"{base}/api/token/", json={"username": "newbie", "password": "newbie-password"}).status_code == 200,
        10,
    )

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert not (data_dir / "runtime.json").exists()
    log = (data_dir / "up.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-6000:]  # a clean shutdown prints no traceback
