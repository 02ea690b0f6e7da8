"""Blob storage on S3 over HTTP (moto's S3 server): uploads past the limit leave nothing in
the bucket, multipart uploads and ranged downloads through the API, bounded memory with the
API and the S3 server in processes of their own, and ``aiorch blobs migrate``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from infra.embedded import free_port, wait_for_port
from infra.roles import create_user
from tests.conftest import REPO, SHARED_DATA, Client, S3Server, wait_until

MiB = 1024 * 1024
WAV = SHARED_DATA / "speech" / "cards-005.wav"
S3 = pytest.mark.parametrize("blob_backend", ["s3"], indirect=True)
pytestmark = pytest.mark.skipif(not WAV.exists(), reason=f"real recordings not found in {SHARED_DATA}")


def event_count(system: Any) -> int:
    with system.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM aiorch_events")).scalar_one())


@pytest.fixture
def api(runner: Any, system: Any) -> dict[str, Any]:
    """Projector and API on S3 blob storage; an admin and an editor with a project."""
    runner.projector()
    base = runner.api()
    for name in ("admin", "editor"):
        create_user(system, name, f"{name}-password", name)
    projector = system.projector()
    wait_until(lambda: projector.position() >= system.platform.head())
    admin, editor = Client(base, "admin", "admin-password"), Client(base, "editor", "editor-password")
    project = editor.post("/api/projects/", json={"name": "p"}).json()["id"]
    return {"admin": admin, "editor": editor, "project": project}


@S3
def test_over_the_limit_on_s3_leaves_no_object_no_upload_and_no_event(
    api: dict[str, Any], system: Any, s3_server: S3Server
) -> None:
    admin, editor, project = api["admin"], api["editor"], api["project"]
    prefix = system.blobs.prefix + "/"
    assert admin.post("/api/settings/", json={"key": "max_file_size_mb", "value": 9}).status_code == 201
    wav = WAV.read_bytes()
    before = event_count(system)
    # one byte over 9 MiB: a first 8 MiB part has been sent when the limit is passed
    over = editor.post(
        "/api/jobs/",
        data={"project": project, "type": "stt"},
        files={"input_file": ("big.wav", wav + bytes(9 * MiB + 1 - len(wav)))},
    )
    assert over.status_code == 413 and over.headers["content-type"].startswith("application/problem+json"), over.text
    assert s3_server.objects(prefix) == [] and s3_server.open_uploads(prefix) == []
    assert event_count(system) == before
    # a stored file whose submission is refused afterwards (the project is not an id) is removed
    refused = editor.post("/api/jobs/", data={"project": "nope", "type": "stt"}, files={"input_file": ("a.wav", wav)})
    assert refused.status_code == 422, refused.text
    assert s3_server.objects(prefix) == [] and event_count(system) == before

    # exactly the limit: two parts, stored whole, downloaded whole and by ranges through the API
    body = wav + bytes(range(256)) * ((9 * MiB - len(wav)) // 256) + bytes((9 * MiB - len(wav)) % 256)
    fits = editor.post("/api/jobs/", data={"project": project, "type": "stt"}, files={"input_file": ("fits.wav", body)})
    assert fits.status_code == 201, fits.text
    described = fits.json()["input_files"]["input_file"]
    assert described["size"] == 9 * MiB and described["sha256"] == hashlib.sha256(body).hexdigest()
    (stored,) = s3_server.objects(prefix)
    assert stored.endswith("/fits.wav") and s3_server.open_uploads(prefix) == []
    whole = editor.get(described["url"])
    assert whole.status_code == 200 and whole.content == body
    assert whole.headers["content-type"] == "audio/wav" and whole.headers["content-length"] == str(9 * MiB)
    assert whole.headers["content-disposition"] == 'attachment; filename="fits.wav"'
    part = editor.get(described["url"], headers={"Range": "bytes=8388600-8388615"})
    assert part.status_code == 206 and part.content == body[8388600:8388616]
    assert part.headers["content-range"] == f"bytes 8388600-8388615/{9 * MiB}"
    tail = editor.get(described["url"], headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == body[-10:]
    beyond = editor.get(described["url"], headers={"Range": f"bytes={9 * MiB}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{9 * MiB}"
    # a signed link works without a token, exactly as on the local folder
    assert "sig=" in described["url"] and httpx.get(editor.http.base_url.join(described["url"])).content == body


def vm_hwm(pid: int, field: str = "VmHWM") -> int:
    """Peak resident memory of process ``pid`` (VmHWM; or another field of its status), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def reset_peak(pid: int) -> int:
    """Reset the peak of ``pid`` to its current resident memory (``clear_refs`` 5, Linux ≥ 4.0)
    where allowed; return the level the peak is measured from (bytes)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:  # not allowed here: measure from the current resident memory instead
        return vm_hwm(pid, "VmRSS")
    return vm_hwm(pid)


def multipart_stream(project: str, wav: bytes, size: int, boundary: str) -> tuple[int, Iterator[bytes]]:
    """A multipart stt submission whose ``input_file`` is ``size`` bytes, generated as it is sent."""
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in (("project", project), ("type", "stt"))
    )
    head += f'--{boundary}\r\nContent-Disposition: form-data; name="input_file"; filename="big.wav"\r\n\r\n'
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head.encode() + wav
        left = size - len(wav)
        while left > 0:
            n = min(left, MiB)
            left -= n
            yield bytes(n)
        yield tail

    return len(head.encode()) + size + len(tail), body()


def test_a_64_mib_upload_to_s3_keeps_the_api_process_memory_bounded(
    runner: Any, system: Any, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s3_port, api_port = free_port(), free_port()
    logs = open(tmp_path / "processes.log", "wb")  # noqa: SIM115 (closed at the end)
    s3 = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)], stdout=logs, stderr=logs
    )
    aws = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIORCH_", "AWS_"))}
    env.update(
        aws,
        PYTHONPATH=str(REPO),
        AIORCH_DATABASE_URL=database_url,
        AIORCH_DATA_DIR=str(tmp_path / "api-data"),
        AIORCH_SECRET_KEY="test-secret-key-0123456789abcdef0123456789",
        AIORCH_BLOB_URL="s3://memory/blobs",
    )
    api = None
    try:
        wait_for_port("127.0.0.1", s3_port, 30)
        import boto3

        client = boto3.client(
            "s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
        )
        client.create_bucket(Bucket="memory")
        runner.projector()
        create_user(system, "ed", "ed-password", "editor")
        api = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "api", "--port", str(api_port)], env=env, stdout=logs, stderr=logs, cwd=REPO
        )
        wait_for_port("127.0.0.1", api_port, 60)
        base = f"http://127.0.0.1:{api_port}"
        projector = system.projector()
        wait_until(lambda: projector.position() >= system.platform.head())
        ed = Client(base, "ed", "ed-password")
        project = ed.post("/api/projects/", json={"name": "p"}).json()["id"]
        wav = WAV.read_bytes()
        # a first, small upload warms every code path up; then the peak is read
        warm = ed.post("/api/jobs/", data={"project": project, "type": "stt"}, files={"input_file": ("w.wav", wav)})
        assert warm.status_code in (201, 202), warm.text
        before = reset_peak(api.pid)
        length, body = multipart_stream(project, wav, 64 * MiB, "aiorch-rss")
        resp = ed.post(
            "/api/jobs/",
            content=body,
            headers={"Content-Type": "multipart/form-data; boundary=aiorch-rss", "Content-Length": str(length)},
            timeout=300,
        )
        assert resp.status_code in (201, 202), resp.text
        grew = vm_hwm(api.pid) - before
        job = ed.get(f"/api/jobs/{resp.json()['id']}/").json()
        assert job["input_files"]["input_file"]["size"] == 64 * MiB
        sizes = [o["Size"] for o in client.list_objects_v2(Bucket="memory", Prefix="blobs/uploads/")["Contents"]]
        assert sorted(sizes) == sorted([len(wav), 64 * MiB])
        with capsys.disabled():
            print(f"\n64 MiB upload to S3: the API process's VmHWM rose by {grew / MiB:.1f} MiB (from {before / MiB:.0f} MiB)")
        assert grew < 32 * MiB, f"the API's peak memory rose by {grew / MiB:.1f} MiB"
    finally:
        for proc in (api, s3):
            if proc is not None:
                proc.kill()
                proc.wait(10)
        logs.close()


def test_blobs_migrate_copies_a_local_folder_into_the_bucket_once(tmp_path: Path, s3_server: S3Server) -> None:
    from infra.blobs import LocalBlobStore

    folder = tmp_path / "blobs"
    local = LocalBlobStore(folder)
    sources = {"a.wav": WAV.read_bytes(), "b.txt": b"a transcript", "big.bin": os.urandom(9 * MiB)}
    keys = []
    for name, data in sources.items():
        (tmp_path / name).write_bytes(data)
        keys.append(local.put_file(tmp_path / name, f"results/job-{name}/1/{name}").key)
    prefix = f"migrate-{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIORCH_", "AWS_"))}
    env.update(s3_server.env, PYTHONPATH=str(REPO), AIORCH_BLOB_URL=f"s3://{s3_server.bucket}/{prefix}")
    env["AIORCH_DATA_DIR"] = str(tmp_path / "data")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "infra.cli", "blobs", "migrate", "--from", str(folder), *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)

    first = run("--verify")
    assert first.returncode == 0, first.stderr
    assert "copied 3 blobs" in first.stdout and "verified every one" in first.stdout, first.stdout
    assert s3_server.objects(prefix + "/") == sorted(f"{prefix}/{k}" for k in keys)
    client = s3_server.client()
    for key, data in zip(keys, sources.values(), strict=True):
        assert client.get_object(Bucket=s3_server.bucket, Key=f"{prefix}/{key}")["Body"].read() == data
    again = run()
    assert again.returncode == 0 and "copied 0 blobs" in again.stdout and "skipped 3" in again.stdout, again.stdout
    # a copy of the same size but other bytes is found by --verify
    client.put_object(Bucket=s3_server.bucket, Key=f"{prefix}/{keys[1]}", Body=b"A TRANSCRIPT")
    checked = run("--verify")
    assert checked.returncode == 1 and f"differs: {keys[1]}" in checked.stderr, (checked.stdout, checked.stderr)
    nothing = subprocess.run(
        [sys.executable, "-m", "infra.cli", "blobs", "migrate"],
        env={**env, "AIORCH_BLOB_URL": ""},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert nothing.returncode == 2 and "AIORCH_BLOB_URL" in nothing.stderr
