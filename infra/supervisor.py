"""``aiorch up``: embedded services when none are configured, then every role in its own
child process, restarted with backoff when it dies, stopped gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from infra.bootstrap import bootstrap
from infra.embedded import start_broker, start_postgres, stop_postgres
from infra.roles import bootstrap_admin
from infra.settings import Settings

log = logging.getLogger(__name__)

#: ``db_pool_size`` of a processor child (its own claim, run, lease and heartbeat threads)
PROCESSOR_POOL_SIZE = 3


def ensure_database(server_url: str, name: str = "aiorch") -> str:
    """Create database ``name`` on the server of ``server_url`` if absent; return its URL."""
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    with psycopg.connect(server_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


@dataclass
class Child:
    """One supervised role process."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)
    env: dict[str, str] = field(default_factory=dict)  # this role's additions to the environment

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(self.argv, env={**env, **self.env})
        self.started_at = time.monotonic()
        log.info("started %s (pid %s)", self.name, self.proc.pid)


class PortTaken(RuntimeError):
    """The API's address is in use by another program."""


def check_port_free(host: str, port: int) -> None:
    """Raises PortTaken when ``host:port`` cannot be bound (another program listens)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise PortTaken(f"port {port} on {host} is already in use by another program: stop it, or pass --port") from exc


def api_answers(url: str, instance: str) -> bool:
    """Whether ``url``/health/live answers as *this* system's API (its instance id)."""
    try:
        resp = httpx.get(f"{url}/health/live", timeout=2)
        body = resp.json()
    except (httpx.HTTPError, ValueError):
        return False
    return resp.status_code == 200 and isinstance(body, dict) and body.get("instance") == instance


@dataclass
class Services:
    """The database and broker the roles use: embedded ones started here, or the configured."""

    settings: Settings  # with the database and broker addresses filled in
    pgdata: Path
    broker: subprocess.Popen[bytes] | None = None
    embedded_postgres: bool = False

    def stop(self) -> None:
        """Stop what :func:`start_services` started (the broker, then PostgreSQL)."""
        if self.broker is not None:
            self.broker.terminate()
            self.broker.wait(5)
        if self.embedded_postgres:
            stop_postgres(self.pgdata)


def start_services(settings: Settings) -> Services:
    """Embedded PostgreSQL (under ``<data>/pg``) without ``AIORCH_DATABASE_URL``, the
    embedded broker without ``AIORCH_KAFKA_BOOTSTRAP_SERVERS``; the configured ones else."""
    from infra.secrets import secure_data_dir

    services = Services(settings, settings.data_dir / "pg", embedded_postgres=not os.environ.get("AIORCH_DATABASE_URL"))
    if not settings.database_url:
        log.info("no AIORCH_DATABASE_URL: starting embedded PostgreSQL in %s", services.pgdata)
        _server, server_url = start_postgres(services.pgdata)
        settings = settings.model_copy(update={"database_url": ensure_database(server_url)})
        secure_data_dir(settings)  # embedded-postgres opened it for its server's user
    if not settings.kafka_bootstrap_servers:
        log.info("no AIORCH_KAFKA_BOOTSTRAP_SERVERS: starting the embedded broker (Tansu)")
        services.broker, bootstrap_servers = start_broker(log_file=settings.data_dir / "broker.log")
        settings = settings.model_copy(update={"kafka_bootstrap_servers": bootstrap_servers})
    services.settings = settings
    return services


def role_env(settings: Settings, instance: str) -> dict[str, str]:
    """The environment every role child starts with: this one, the system's addresses and
    data folder, and the instance id its API answers ``/health/live`` with."""
    assert settings.database_url and settings.kafka_bootstrap_servers
    env = dict(os.environ)
    env["AIORCH_INSTANCE"] = instance
    env["AIORCH_DATABASE_URL"] = settings.database_url
    env["AIORCH_KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    env["AIORCH_DATA_DIR"] = str(settings.data_dir)
    return env


def prepare(settings: Settings) -> None:
    """What runs once before the roles start: the schema step (in :func:`bootstrap`, so the
    roles never race on DDL), the bootstrap admin, and the secrets (generated once, before
    several children read them)."""
    from infra.secrets import fernet, secret_key

    system = bootstrap(settings)
    bootstrap_admin(system)
    secret_key(settings)
    fernet(settings)
    system.close()


def write_runtime(settings: Settings, api_url: str) -> None:
    """``runtime.json`` (private): how the CLI finds this running system."""
    from infra.secrets import write_private

    runtime = {
        "database_url": settings.database_url,
        "kafka_bootstrap_servers": settings.kafka_bootstrap_servers,
        "api_url": api_url,
        "pid": os.getpid(),
    }
    write_private(settings.runtime_file, json.dumps(runtime, indent=2))


CLI = [sys.executable, "-m", "infra.cli"]


def api_children(host: str, port: int, workers: int = 1) -> list[Child]:
    """The API role's children: one ``aiorch api`` on ``host:port``, with ``--workers``
    uvicorn worker processes on that one port when ``workers`` > 1 (uvicorn's parent
    restarts a worker that dies and stops them all on SIGTERM; this supervisor restarts
    the parent). (The first child is the one whose start :func:`wait_for_api` watches.)"""
    extra = ["--workers", str(workers)] if workers > 1 else []
    return [Child("api", [*CLI, "api", "--host", host, "--port", str(port), *extra])]


def role_children(processors: int, types: str, env: dict[str, str]) -> list[Child]:
    """The other roles' children: relay, projector, dispatcher and ``processors`` processors
    serving ``types``."""
    children = [
        Child("relay", [*CLI, "relay"]),
        Child("projector", [*CLI, "projector"]),
        Child("dispatcher", [*CLI, "dispatcher"]),
    ]
    # A processor runs one job at a time: a small pool (unless AIORCH_DB_POOL_SIZE says
    # otherwise) keeps `aiorch up --processors 8` well within max_connections=100.
    pool = {} if "AIORCH_DB_POOL_SIZE" in env else {"AIORCH_DB_POOL_SIZE": str(PROCESSOR_POOL_SIZE)}
    return children + [Child(f"processor-{i + 1}", [*CLI, "process", "--types", types], env=pool) for i in range(processors)]


def wait_for_api(api: Child, host: str, port: int, instance: str, stopping: threading.Event) -> int:
    """Wait until this system's API (``instance``) answers on ``host:port``: 0 then, or when
    ``stopping`` is set meanwhile; 1 (and ``stopping`` set) when the API's child exited or
    did not answer within 120 s."""
    probe_host = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
    api_url, deadline = f"http://{host}:{port}", time.monotonic() + 120
    while not stopping.is_set():
        if api_answers(f"http://{probe_host}:{port}", instance):
            log.info("aiorch is up: API at %s (docs at %s/docs)", api_url, api_url)
            return 0
        if (api.proc is not None and api.proc.poll() is not None) or time.monotonic() > deadline:
            try:
                check_port_free(host, port)
                log.error("the API did not start on %s (see its log above); stopping", api_url)
            except PortTaken as exc:
                log.error("%s", exc)
            stopping.set()
            return 1
        stopping.wait(0.2)
    return 0


def supervise(children: list[Child], env: dict[str, str], stopping: threading.Event) -> None:
    """Restart each child that exits (backoff 1 s, or doubling up to 30 s while it dies
    within 30 s of its start) until ``stopping`` is set."""
    while not stopping.wait(0.5):
        for child in children:
            if child.proc is not None and child.proc.poll() is not None:
                backoff = min(2**child.restarts, 30) if time.monotonic() - child.started_at < 30 else 1
                log.warning("%s exited with %s; restarting in %s s", child.name, child.proc.returncode, backoff)
                child.restarts += 1
                if stopping.wait(backoff):
                    break
                child.start(env)


def stop_children(children: list[Child], timeout_s: float = 20.0) -> None:
    """SIGTERM every running child, then wait up to ``timeout_s`` seconds in all (SIGKILL after)."""
    for child in children:
        if child.proc and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for child in children:
        if child.proc:
            try:
                child.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.proc.kill()


def _stop_on_signals() -> threading.Event:
    """An event set on SIGTERM or SIGINT."""
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping every role", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stopping


def run_system(settings: Settings, *, host: str, port: int, processors: int, types: str, api_workers: int = 1) -> int:
    """Run the whole system until SIGTERM/SIGINT, the API in ``api_workers`` processes;
    returns the exit code (1 when the API's port is taken or the API never answered)."""
    from infra.secrets import secure_data_dir

    try:
        check_port_free(host, port)
    except PortTaken as exc:
        log.error("%s", exc)
        return 1
    secure_data_dir(settings)
    services = start_services(settings)
    settings = services.settings
    instance = uuid.uuid4().hex
    env = role_env(settings, instance)
    prepare(settings)
    write_runtime(settings, f"http://{host}:{port}")
    api = api_children(host, port, api_workers)
    children = api + role_children(processors, types, env)
    stopping = _stop_on_signals()
    for child in children:
        child.start(env)
    code = wait_for_api(api[0], host, port, instance, stopping)
    supervise(children, env, stopping)
    stop_children(children)
    services.stop()
    settings.runtime_file.unlink(missing_ok=True)
    return code
