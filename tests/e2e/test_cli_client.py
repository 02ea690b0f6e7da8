"""The command-line client (issue 12, item 9) against a running ``aiorch up`` with real engines:
``aiorch login`` keeps its tokens 0600, ``aiorch submit tts --wait`` follows the live feed and
downloads the WAV (exit 0), a job that fails exits 1, bad usage exits 2, Ctrl-C asks and
cancels (exit 130), ``aiorch jobs list`` shows the jobs, and processes sharing one login
refresh its rotating tokens under the lock without revoking the session."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import ADMIN, ADMIN_PASSWORD, Up, newcomer_env, start_up

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def up(model_dir: Path) -> Iterator[Up]:
    """One fresh ``aiorch up`` for this module's tests."""
    with start_up(model_dir) as running:
        yield running


@pytest.fixture
def cli(up: Up, tmp_path: Path, model_dir: Path) -> Any:
    """Run ``aiorch ARGS`` as a user of that system: its own config folder, cwd ``tmp_path/work``."""
    work = tmp_path / "work"
    work.mkdir()
    env = {**newcomer_env(tmp_path / "unused-data", model_dir), "XDG_CONFIG_HOME": str(tmp_path / "config")}

    def run(*args: str, stdin: str = "", timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "infra.cli", *args],
            input=stdin,
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    run.work = work  # type: ignore[attr-defined]
    run.env = env  # type: ignore[attr-defined]
    run.credentials = tmp_path / "config" / "aiorch" / "credentials.json"  # type: ignore[attr-defined]
    return run


def test_login_submit_wait_watch_list_and_exit_codes(up: Up, cli: Any) -> None:
    # not logged in yet: one line, bad usage
    done = cli("jobs", "list")
    assert done.returncode == 2 and "aiorch login" in done.stderr and "Traceback" not in done.stderr, done.stderr

    done = cli("login", up.base, "--username", ADMIN, "--password-stdin", stdin=f"{ADMIN_PASSWORD}\n")
    assert done.returncode == 0, done.stderr
    creds: Path = cli.credentials
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE(creds.parent.stat().st_mode) == 0o700
    assert json.loads(creds.read_text())["url"] == up.base
    assert cli("login", up.base, "--username", ADMIN, "--password-stdin", stdin="wrong\n").returncode == 1

    # a real tts job, followed live; its WAV lands in the current folder
    done = cli("submit", "tts", "--param", "text=Hello from the command line client.", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    tts_id = done.stdout.splitlines()[0].strip()
    assert "completed" in done.stderr
    wav_path = cli.work / "speech.wav"
    assert str(wav_path) in done.stdout
    with wave.open(str(wav_path)) as w:
        assert w.getnframes() / w.getframerate() > 1.0
    # watching a finished job: the same exit code; the existing file is not overwritten
    done = cli("watch", tts_id)
    assert done.returncode == 0, done.stderr
    assert (cli.work / f"speech-{tts_id[:8]}.wav").exists()

    # a WAV header over garbage: accepted (the sniffed type fits), fails as invalid_input → exit 1
    broken = cli.work / "broken.wav"
    broken.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00garbage" * 50)
    done = cli("submit", "stt", "--file", f"input_file={broken}", "--wait")
    assert done.returncode == 1, done.stdout + done.stderr
    failed_id = done.stdout.splitlines()[0].strip()
    assert "failed" in done.stderr and "invalid_input" in done.stderr

    # bad usage → 2, one line each
    for args in (
        ("submit", "tts", "--param", "no-equals-sign"),
        ("submit", "tts", "--param", "txt=misspelt"),  # the API's 422
        ("submit", "stt", "--file", "input_file=/no/such/file.wav"),
        ("submit", "teleportation"),
    ):
        done = cli(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("aiorch: error:"), done.stderr

    # Ctrl-C while waiting asks whether to cancel; "y" cancels the job → 130
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra.cli",
            "submit",
            "ai_stories",
            "-p",
            "prompt=A very long saga",
            "-p",
            "length=2000",
            "--wait",
        ],
        env=cli.env,
        cwd=cli.work,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    story_id = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate("y\n", timeout=60)
    assert proc.returncode == 130, out + err
    assert f"cancel job {story_id}?" in err
    assert f"job {story_id}: cancelled" in err  # it waited for the running job to stop

    http = httpx.Client(base_url=up.base, timeout=30)
    token = http.post("/api/token/", json={"username": ADMIN, "password": ADMIN_PASSWORD}).json()["access"]
    http.headers["Authorization"] = f"Bearer {token}"
    assert wait_until(lambda: http.get(f"/api/jobs/{story_id}/").json()["status"] == "cancelled", 60, 0.5)

    # the table, and the same as JSON lines
    done = cli("jobs", "list")
    assert done.returncode == 0, done.stderr
    for job_id, status in ((tts_id, "completed"), (failed_id, "failed"), (story_id, "cancelled")):
        row = next(line for line in done.stdout.splitlines() if job_id in line)
        assert status in row, row
    done = cli("jobs", "list", "--status", "failed", "--json")
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == [failed_id]


def test_concurrent_refreshes_share_one_rotation(up: Up, cli: Any) -> None:
    """Refresh tokens rotate, and a rotated one presented again (after 10 s) revokes the session:
    two processes whose access token is unusable refresh under the lock, one rotates, the other
    adopts the new tokens; the session stays valid."""
    assert cli("login", up.base, "--username", ADMIN, "--password-stdin", stdin=f"{ADMIN_PASSWORD}\n").returncode == 0
    creds = json.loads(cli.credentials.read_text())
    first_refresh = creds["refresh"]
    creds["access"] = "not.a-token.at-all"  # expired for the client: it refreshes before use
    cli.credentials.write_text(json.dumps(creds))

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "jobs", "list", "--json"],
            env=cli.env,
            cwd=cli.work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    after = json.loads(cli.credentials.read_text())
    assert after["refresh"] != first_refresh
    assert stat.S_IMODE(os.stat(cli.credentials).st_mode) == 0o600
    # had two of them presented the same refresh token, the second would have been refused (401)
    # and exited 1; the session was not revoked: its current refresh token still works
    refreshed = httpx.post(f"{up.base}/api/token/refresh/", json={"refresh": after["refresh"]}, timeout=30)
    assert refreshed.status_code == 200, refreshed.text
