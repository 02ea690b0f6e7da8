"""The README word for word (issue 12, item 8): every ``bash`` block of the sections a newcomer
follows (the walkthrough, the API by resource, the job types, the live feed, operations,
webhooks) runs as
written, in order, in one shell (``set -euo pipefail``, and curl failing on any HTTP error),
against ``AIORCH_BOOTSTRAP_ADMIN=admin:change-me-now aiorch up`` on a fresh data folder; then
Ctrl-C stops it cleanly (exit 0, no traceback) although jobs are still running.

The only change to the text is the port (a free one instead of 8000). The shell's folder is a
stand-in for the repository: ``.venv/bin/aiorch`` and ``.venv/bin/python`` run this checkout
with this interpreter, and ``../shared`` is the shared data. Left out: the backup (a second
database) and the multi-host, S3 and docker examples that need other machines or services."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, SHARED_DATA
from tests.e2e.conftest import ADMIN, ADMIN_PASSWORD, Up, newcomer_env

pytestmark = pytest.mark.slow

SECTIONS = (
    "Walkthrough: curl and the command-line client",
    "The API by resource",
    "Job types",
    "Live feed and history",
    "Operations",
    "Webhooks",
)
#: blocks left out, by a string they contain: the backup needs pg_dump and a second database
LEFT_OUT = ("$NEW_DATABASE_URL",)


def bash_blocks(readme: str, sections: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(section, code)`` of every fenced ``bash`` block under a ``## `` heading in ``sections``,
    in document order, dedented (blocks inside list items are indented)."""
    out: list[tuple[str, str]] = []
    section = ""
    lines = readme.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(r"^(\s*)```bash\s*$", line)
        if fence and section in sections:
            body = []
            i += 1
            while not re.match(r"^\s*```\s*$", lines[i]):
                body.append(lines[i])
                i += 1
            code = textwrap.dedent("\n".join(body))
            if not any(marker in code for marker in LEFT_OUT):
                out.append((section, code))
        i += 1
    return out


def test_every_walkthrough_command_runs_as_written(fresh_up: Up, tmp_path: Path, model_dir: Path) -> None:
    readme = (REPO / "README.md").read_text()
    assert "AIORCH_BOOTSTRAP_ADMIN=admin:change-me-now .venv/bin/aiorch up" in readme
    blocks = bash_blocks(readme, SECTIONS)
    assert {section for section, _ in blocks} == set(SECTIONS), [s for s, _ in blocks]

    # the repository folder as the README's reader has it
    work = tmp_path / "repo"
    (work / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / "shared").symlink_to(SHARED_DATA.parent)
    for name, command in (("aiorch", f"{sys.executable} -m infra.cli"), ("python", sys.executable)):
        shim = work / ".venv" / "bin" / name
        shim.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        shim.chmod(0o755)

    script = ["set -euo pipefail", 'curl() { command curl --fail-with-body "$@"; }']
    for number, (section, code) in enumerate(blocks, 1):
        script.append(f'echo "### block {number} ({section}) at $(date +%s)" >&2')
        script.append(code.replace("127.0.0.1:8000", f"127.0.0.1:{fresh_up.port}"))
    env = {**newcomer_env(fresh_up.data_dir, model_dir), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    done = subprocess.run(
        [shutil.which("bash") or "/bin/bash", "-c", "\n".join(script)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    report = f"exit {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
    assert done.returncode == 0, report
    assert f"### block {len(blocks)} " in done.stderr, report

    # what the walkthrough promised: the WAV (curl and the client's), the transcript
    for wav in [work / "speech.wav", *sorted(work.glob("speech-*.wav"))]:
        with wave.open(str(wav)) as w:
            assert w.getnframes() / w.getframerate() > 1.0, wav
    assert len(list(work.glob("speech-*.wav"))) == 1, sorted(os.listdir(work))
    assert "dashwood" in done.stdout.lower(), report  # librivox-0870, read by stt
    with wave.open(str(work / "head.wav")) as w:  # the Range example: the first 1 KiB of the WAV
        assert (work / "head.wav").stat().st_size == 1024 and w.getframerate() > 0

    # the seven job types' examples were all accepted
    http = httpx.Client(base_url=fresh_up.base, timeout=30)
    token = http.post("/api/token/", json={"username": ADMIN, "password": ADMIN_PASSWORD}).json()["access"]
    http.headers["Authorization"] = f"Bearer {token}"
    jobs = http.get("/api/jobs/", params={"page_size": 500}).json()["results"]
    mine = {j["type"] for j in jobs if j["created_by"]["username"] == ADMIN}
    assert mine == {"stt", "tts", "voice_cloning", "dubbing", "ai_stories", "video_translation", "animated_talking_heads"}

    # Ctrl-C with jobs still pending or running: every role stops, no traceback
    assert fresh_up.ctrl_c() == 0, fresh_up.log()[-4000:]
    log = fresh_up.log()
    assert "Traceback" not in log, log[-6000:]
    assert not (fresh_up.data_dir / "runtime.json").exists()
