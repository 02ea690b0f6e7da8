"""``aiorch up`` as a newcomer runs it, for the end-to-end tests: a fresh data folder, no
``AIORCH_*`` but the data and model folders and the bootstrap admin, its own session (so that
Ctrl-C can be sent to the whole process group, as a terminal does)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from infra.embedded import free_port
from tests.conftest import REPO, wait_until

ADMIN, ADMIN_PASSWORD = "admin", "change-me-now"


@dataclass
class Up:
    """A running ``aiorch up``: its API base URL, data folder, process and log file."""

    base: str
    port: int
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ctrl_c(self, timeout: float = 90) -> int:
        """SIGINT to the whole process group (what Ctrl-C in a terminal does); the exit code."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout)


def newcomer_env(data_dir: Path, model_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIORCH_")}
    env.update(AIORCH_DATA_DIR=str(data_dir), AIORCH_MODEL_DIR=str(model_dir), PYTHONPATH=str(REPO))
    return env


@contextlib.contextmanager
def start_up(model_dir: Path) -> Iterator[Up]:
    """``AIORCH_BOOTSTRAP_ADMIN=admin:change-me-now aiorch up --port P`` on a fresh data folder,
    served (``/health/ready`` 200); stopped with Ctrl-C afterwards if the test did not."""
    data_dir = Path(tempfile.mkdtemp(prefix="aiorch-e2e-", dir="/tmp"))
    port = free_port()
    env = {**newcomer_env(data_dir, model_dir), "AIORCH_BOOTSTRAP_ADMIN": f"{ADMIN}:{ADMIN_PASSWORD}"}
    log_path = data_dir / "up.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "up", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )
    up = Up(f"http://127.0.0.1:{port}", port, data_dir, proc, log_path)

    def ready() -> bool:
        try:
            return httpx.get(f"{up.base}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            assert proc.poll() is None, up.log()
            return False

    try:
        wait_until(ready, 120, 0.5, "aiorch up to serve")
        yield up
    finally:
        if proc.poll() is None:
            up.ctrl_c()
    shutil.rmtree(data_dir, ignore_errors=True)  # kept when the test failed, for its up.log


@pytest.fixture
def fresh_up(model_dir: Path) -> Iterator[Up]:
    """A fresh ``aiorch up`` (:func:`start_up`) for one test."""
    with start_up(model_dir) as up:
        yield up
