"""The Piper worker protocol: one long-lived ``piper_worker.py`` child (GPL-3.0, never
imported) spoken to in JSON lines, its pipes drained by two threads."""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from processors.engines.base import EngineContext, EngineError, ModelMissing
from processors.engines.models import PiperVoiceFiles

__all__ = ["WORKER_SCRIPT", "PiperWorker", "WorkerDied"]

WORKER_SCRIPT = Path(__file__).with_name("piper_worker.py")
"""The Piper worker, run by path with ``python -P -u`` (never imported)."""

_POLL_SECONDS = 0.1
_LOG = logging.getLogger("processors.engines.tts")


class WorkerDied(Exception):
    """The Piper worker exited, hung or broke the protocol."""


class PiperWorker:
    """One running ``piper_worker.py`` child and the threads that drain its pipes."""

    def __init__(self, voice: PiperVoiceFiles, start_timeout: float) -> None:
        self.voice = voice
        self._ids = itertools.count(1)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-P", "-u", str(WORKER_SCRIPT), "--model", str(voice.model), "--config", str(voice.config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                bufsize=1,
                env=env,
                close_fds=True,
            )
        except OSError as exc:
            raise EngineError(f"cannot start the Piper worker: {exc}") from exc
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._pump_stdout, args=(self.proc.stdout,), daemon=True, name="piper-stdout").start()
        threading.Thread(target=self._pump_stderr, args=(self.proc.stderr,), daemon=True, name="piper-stderr").start()
        ready = self._next_message(time.monotonic() + start_timeout, None)
        if ready is None or not ready.get("ready"):
            error = (ready or {}).get("error") or "worker exited before it was ready"
            self.kill()
            raise ModelMissing(f"Piper worker failed to start: {error}{self.stderr_hint()}")
        self.sample_rate = int(ready["sample_rate"])
        self.load_seconds = float(ready.get("load_seconds", 0.0))

    def _pump_stdout(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._lines.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self._lines.put(None)

    def _pump_stderr(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                line = line.rstrip()
                if line:
                    self._stderr_tail.append(line)
                    _LOG.debug("piper worker: %s", line)
        except (OSError, ValueError):
            pass

    def stderr_hint(self) -> str:
        """Last worker stderr lines, formatted for an error message ('' if none)."""
        tail = list(self._stderr_tail)[-5:]
        return (" (worker stderr: " + " | ".join(tail) + ")") if tail else ""

    def alive(self) -> bool:
        """True while the child process runs."""
        return self.proc.poll() is None

    def _next_message(self, deadline: float, ctx: EngineContext | None) -> dict[str, Any] | None:
        """Next protocol message, or None at EOF; polls ``ctx.should_stop``."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerDied("Piper worker did not answer in time")
            try:
                line = self._lines.get(timeout=min(_POLL_SECONDS, remaining))
            except queue.Empty:
                if ctx is not None:
                    ctx.check_stop()
                continue
            if line is None:
                self._lines.put(None)  # keep reporting EOF
                return None
            try:
                message = json.loads(line)
            except ValueError:
                _LOG.warning("Piper worker wrote a non-protocol line: %r", line[:200])
                continue
            if isinstance(message, dict):
                return message

    def synthesize(self, text: str, out: Path, timeout: float, ctx: EngineContext) -> dict[str, Any]:
        """Send one request and wait for its answer.

        Raises:
            EngineCancelled: ``ctx.should_stop()`` became True while waiting (the worker
                finishes the sentence in the background; its late answer is skipped).
            WorkerDied: the worker exited, hung past ``timeout`` or broke the protocol.
        """
        request_id = next(self._ids)
        line = json.dumps({"id": request_id, "text": text, "out": str(out)}, ensure_ascii=False)
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise WorkerDied(f"cannot write to the Piper worker: {exc}") from exc
        deadline = time.monotonic() + timeout
        while True:
            message = self._next_message(deadline, ctx)
            if message is None:
                self.proc.wait(timeout=5)
                raise WorkerDied(f"Piper worker exited with status {self.proc.returncode}{self.stderr_hint()}")
            if message.get("id") == request_id:
                return message
            # A late answer to a request of a cancelled job: skip it.

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to quit, then terminate/kill it if it does not."""
        if self.alive():
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.kill()
        self._close_pipes()

    def kill(self) -> None:
        """Kill the worker at once."""
        if self.alive():
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except (OSError, ValueError):
                pass
