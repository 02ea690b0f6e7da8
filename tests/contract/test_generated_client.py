"""A client generated from the running API's ``/openapi.json`` by openapi-python-client
(issue 12) works for a whole flow: log in, create a project, submit a JSON tts job (the tts
variant of the discriminated ``JobIn``), wait for it (read as the tts ``JobOut``), read its
result, and read a 422 and a 404 as typed problems.

The generator pins typer<0.28 and httpx<0.29, which this project's venv does not (it would
downgrade them), so it runs from its own venv: ``AIORCH_OPENAPI_CLIENT`` (the
``openapi-python-client`` executable, e.g. ``/tmp/oapi/bin/openapi-python-client`` after
``python3 -m venv /tmp/oapi && /tmp/oapi/bin/pip install openapi-python-client``), else one
on ``PATH``. Without it the test skips, unless ``AIORCH_REQUIRE_OPENAPI_CLIENT`` is set. The
client is generated into the test's temporary folder each run (nothing generated is kept in
the repository) and imported from there; generating must print no warning."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest


def generator() -> str | None:
    return os.environ.get("AIORCH_OPENAPI_CLIENT") or shutil.which("openapi-python-client")


def generate_client(base: str, folder: Path) -> Any:
    """``aiorch_client`` generated from ``base``'s document into ``folder``, imported."""
    binary = generator()
    if binary is None:
        if os.environ.get("AIORCH_REQUIRE_OPENAPI_CLIENT"):
            pytest.fail("AIORCH_REQUIRE_OPENAPI_CLIENT is set but openapi-python-client was not found")
        pytest.skip("openapi-python-client not found (set AIORCH_OPENAPI_CLIENT to its executable)")
    spec = folder / "openapi.json"
    spec.write_bytes(httpx.get(f"{base}/openapi.json", timeout=30).content)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff
    run = subprocess.run(
        [binary, "generate", "--path", str(spec), "--meta", "none", "--output-path", str(folder / "aiorch_client")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "Warning" not in output, output
    sys.path.insert(0, str(folder))
    try:
        for name in [m for m in sys.modules if m == "aiorch_client" or m.startswith("aiorch_client.")]:
            del sys.modules[name]
        return importlib.import_module("aiorch_client")
    finally:
        sys.path.remove(str(folder))


def test_a_generated_client_runs_a_whole_flow(platform_up: dict[str, Any], tmp_path: Path) -> None:
    base = platform_up["base"]
    generate_client(base, tmp_path)
    from aiorch_client import AuthenticatedClient, Client
    from aiorch_client.api.auth import token_create
    from aiorch_client.api.jobs import jobs_create, jobs_result, jobs_retrieve
    from aiorch_client.api.projects import projects_create
    from aiorch_client.models import (
        Credentials,
        JobStatus,
        Problem,
        ProjectIn,
        ProjectOut,
        ResultOut,
        TokenPair,
        TtsJobIn,
        TtsJobOut,
        TtsParameters,
        ValidationProblem,
    )

    tokens = token_create.sync(client=Client(base_url=base), body=Credentials(username="editor", password="editor-password"))
    assert isinstance(tokens, TokenPair)
    client = AuthenticatedClient(base_url=base, token=tokens.access, timeout=httpx.Timeout(30))

    project = projects_create.sync(client=client, body=ProjectIn(name="Generated client"))
    assert isinstance(project, ProjectOut) and project.name == "Generated client"

    # the body is the tts variant of the discriminated JobIn, and the answer the tts JobOut
    body = TtsJobIn(project=str(project.id), type_="tts", parameters=TtsParameters(text="Hello there."))
    job = jobs_create.sync(client=client, body=body)
    assert isinstance(job, TtsJobOut) and job.status == JobStatus.PENDING
    assert job.parameters.text == "Hello there."

    deadline = time.monotonic() + 120
    while job.status not in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
        assert time.monotonic() < deadline, f"job {job.id} still {job.status}"
        time.sleep(0.2)
        job = jobs_retrieve.sync(job_id=job.id, client=client)
        assert isinstance(job, TtsJobOut)
    assert job.status == JobStatus.COMPLETED, job.error
    result = jobs_result.sync(job_id=job.id, client=client)
    assert isinstance(result, ResultOut) and result.job == job.id
    assert result.files and result.files[0].content_type.startswith("audio/")
    assert result.meta["duration_seconds"] > 0

    invalid = jobs_create.sync(
        client=client,
        body=TtsJobIn(project=str(project.id), type_="tts", parameters=TtsParameters(text="")),
    )
    assert isinstance(invalid, ValidationProblem) and invalid.status == 422
    assert invalid.errors and invalid.errors[0].loc

    missing = jobs_retrieve.sync(job_id=uuid.uuid4(), client=client)
    assert isinstance(missing, Problem) and missing.status == 404 and missing.instance
