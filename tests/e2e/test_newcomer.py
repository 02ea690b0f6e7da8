"""A newcomer's first minutes (issue 12, item 8): ``aiorch up`` on a taken port says so and
exits 1 before it starts anything, CLI commands that find no system print one line (no
traceback), ``aiorch --help`` and the admin commands import no engine, and a job in a
language no engine here handles is refused at submission, naming what is missing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from infra.embedded import free_port
from tests.conftest import REPO, Runner, wait_until

#: modules of the engines and their numerics: none is needed to print help or to reach
#: the database
ENGINE_MODULES = ("torch", "faster_whisper", "ctranslate2", "onnxruntime", "piper", "cv2", "av", "numpy", "pyworld")


def cli_env(data_dir: Path) -> dict[str, str]:
    """The environment of a newcomer's shell: no AIORCH_* but a fresh data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIORCH_")}
    env.update(AIORCH_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO))
    return env


def aiorch(data_dir: Path, *args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", *args],
        input=stdin,
        env=cli_env(data_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def test_up_on_a_taken_port_says_so_and_exits_1_before_starting_anything(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as other:  # "another program" listening on the port
        other.bind(("127.0.0.1", port))
        other.listen()
        done = aiorch(tmp_path / "data", "up", "--port", str(port))
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert f"port {port}" in out and "already in use" in out, out
    assert "aiorch is up" not in out and "Traceback" not in out, out
    assert not (tmp_path / "data" / "pg").exists()  # no embedded PostgreSQL was started
    assert not (tmp_path / "data" / "runtime.json").exists()


def test_commands_without_a_system_print_one_line(tmp_path: Path) -> None:
    for args in (
        ("users", "create", "bob", "--role", "viewer", "--password-stdin"),
        ("projections", "status"),
        ("processors", "list"),
        ("seed", "--demo"),
    ):
        done = aiorch(tmp_path / "empty", *args, stdin="a-long-password\n")
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, (args, done.stderr)
        assert lines[0].startswith("aiorch: error: no database") and "aiorch up" in lines[0], lines
        assert "Traceback" not in done.stdout + done.stderr


def test_help_and_admin_commands_import_no_engine(tmp_path: Path) -> None:
    probe = f"""
import json, sys
from infra import cli
helps = (["aiorch", "--help"], ["aiorch", "users", "--help"], ["aiorch", "submit", "--help"])
for argv in (*helps, ["aiorch", "projections", "status"]):
    sys.argv = argv
    try:
        cli.main()
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in {list(ENGINE_MODULES)!r} if m in sys.modules)))
"""
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=cli_env(tmp_path / "empty"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout and "aiorch: error: no database" in done.stderr, (done.stdout, done.stderr)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_a_job_in_a_language_nobody_here_speaks_is_refused_at_submission(system: Any) -> None:
    from infra.roles import create_user

    runner = Runner(system, {})  # the API and read models: refusal is the API's, no processor runs
    runner.projector()
    base = runner.api()
    try:
        create_user(system, "newcomer", "newcomer-password", "editor")
        projector = system.projector()
        wait_until(lambda: projector.position() >= (system.platform.recorder.max_notification_id() or 0))
        http = httpx.Client(base_url=base, timeout=30)
        token = http.post("/api/token/", json={"username": "newcomer", "password": "newcomer-password"})
        assert token.status_code == 200, token.text
        http.headers["Authorization"] = f"Bearer {token.json()['access']}"
        project = http.post("/api/projects/", json={"name": "languages"}).json()["id"]
        catalog = {e["type"]: e for e in http.get("/api/engines/").json()}
        tts_languages = {code.split("-")[0].lower() for code in catalog["tts"]["languages"]}

        # Klingon: no voice speaks it, whatever is installed
        resp = http.post(
            "/api/jobs/", json={"project": project, "type": "tts", "parameters": {"text": "nuqneH", "language": "tlh"}}
        )
        assert resp.status_code == 422 and resp.headers["content-type"] == "application/problem+json", resp.text
        assert "'tlh'" in resp.json()["detail"] and "/api/engines/" in resp.json()["detail"], resp.text
        # the same for the spoken text of a talking head
        resp = http.post(
            "/api/jobs/",
            json={"project": project, "type": "animated_talking_heads", "parameters": {"text": "nuqneH", "language": "tlh"}},
        )
        assert resp.status_code == 422, resp.text

        # Spanish: accepted exactly when a voice here speaks it (espeak-ng), else refused naming it
        resp = http.post("/api/jobs/", json={"project": project, "type": "tts", "parameters": {"text": "hola", "language": "es"}})
        if "es" in tts_languages:
            assert resp.status_code in (201, 202), resp.text
        else:
            assert resp.status_code == 422 and "espeak-ng" in resp.json()["detail"], resp.text

        # speech-to-text of a language Whisper does not know
        if catalog["stt"]["available"]:
            wav = (REPO.parent / "shared" / "data" / "speech" / "librivox-0880.wav").read_bytes()
            resp = http.post(
                "/api/jobs/",
                data={"project": project, "type": "stt", "parameters": json.dumps({"language": "tlh"})},
                files={"input_file": ("a.wav", wav, "audio/wav")},
            )
            assert resp.status_code == 422 and "'tlh'" in resp.json()["detail"], resp.text
        # nothing refused was stored
        types = [j["parameters"].get("language") for j in http.get("/api/jobs/").json()["results"]]
        assert "tlh" not in types
    finally:
        runner.close()


def test_doctor_says_what_this_machine_lacks_per_job_type(tmp_path: Path, model_dir: Path) -> None:
    import shutil

    seven = ["stt", "tts", "voice_cloning", "dubbing", "ai_stories", "video_translation", "animated_talking_heads"]
    debian = ["espeak-ng", "apertium", "apertium-eng-spa", "apertium-fr-es"]

    def doctor(path: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**cli_env(tmp_path / "data"), "PATH": path, "AIORCH_MODEL_DIR": str(model_dir)}
        cmd = [sys.executable, "-m", "infra.cli", "doctor", *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False, cwd=REPO)

    # a machine without any of the Debian packages (no program on PATH): each type says what it
    # lacks, and the one command that installs them is given
    bare = tmp_path / "bin"
    bare.mkdir()
    done = doctor(str(bare), "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    by_type = {t["type"]: t for t in report["types"]}
    assert sorted(by_type) == sorted(seven)
    assert report["debian_missing"] == debian and report["apt_get"] == "apt-get install " + " ".join(debian)
    assert report["complete"] is False
    assert by_type["tts"]["languages"] in (["en"], [])  # Piper's English at most
    assert any("espeak-ng" in reason for reason in by_type["tts"]["missing"])
    assert [d["package"] for d in by_type["dubbing"]["debian"]] == debian[1:] + debian[:1]
    assert all(not d["installed"] for t in report["types"] for d in t["debian"])
    assert set(by_type["dubbing"]["languages"]) <= {"en"}  # no es/fr without Apertium
    assert by_type["stt"]["debian"] == [] and by_type["ai_stories"]["debian"] == []
    text = doctor(str(bare))
    assert text.returncode == 1 and "to install the Debian packages: apt-get install espeak-ng apertium" in text.stdout
    assert "Traceback" not in text.stdout + text.stderr

    # this machine as it is: the report matches what is really on PATH
    here = json.loads(doctor(os.environ.get("PATH", ""), "--json").stdout)
    on_path = {"espeak-ng": shutil.which("espeak-ng") is not None, "apertium": shutil.which("apertium") is not None}
    for t in here["types"]:
        for d in t["debian"]:
            if d["package"] in on_path:
                assert d["installed"] == on_path[d["package"]], (t["type"], d)
    if on_path["espeak-ng"]:
        assert "es" in {t["type"]: t for t in here["types"]}["tts"]["languages"]
    if all(on_path.values()) and not here["debian_missing"]:
        assert {"es", "fr"} <= set({t["type"]: t for t in here["types"]}["dubbing"]["languages"])
