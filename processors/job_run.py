"""One run of one claimed job: coalesced progress, batched logs, heartbeats, cancellation,
timeout and hand-back checkpoints, result files, and the final command."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from commands.context import Context
from commands.errors import Conflict, DomainError
from commands.job import RUNNING, Job
from commands.messages import AppendLogs, CompleteJob, ConfirmCancellation, EndAttempt, ReleaseJob, UpdateProgress
from commands.service import Platform
from processors.blobs import BlobAccess
from processors.engines.base import Engine, EngineCancelled, EngineContext, EngineError
from processors.engines.parameters import validated_parameters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunTuning:
    """How often a run writes to the store and renews its lease, and how long it may run
    (seconds)."""

    progress_interval_s: float = 1.0
    log_batch_s: float = 1.0
    cancel_check_s: float = 0.5
    heartbeat_s: float = 10.0
    max_run_s: float = 3600.0


class Lease(Protocol):
    """A job's lease: ``renew()`` answers False once another processor owns the job."""

    def renew(self) -> bool: ...

    def release(self) -> None: ...


class JobRun:
    """Runs ``engine`` on ``job`` (already claimed by this processor) and reports to the store.

    Progress is coalesced: at most one stored event per ``progress_interval_s``, plus every
    change of stage (ARCHITECTURE.md, invariant 8). Log lines are stored in batches. The
    engine stops at its next checkpoint when the job is cancelled, when it runs past
    ``max_run_s`` (failed as ``timed_out``), when the processor stops (the job is handed
    back) or when the lease is lost (nothing more is reported: another processor owns it).
    """

    def __init__(
        self,
        platform: Platform,
        job: Job,
        engine: Engine,
        ctx: Context,
        blobs: BlobAccess,
        tuning: RunTuning,
        limits: dict[str, Any] | None = None,
        lease: Lease | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.platform, self.job, self.engine, self.ctx = platform, job, engine, ctx
        self.limits = limits or {}
        self.blobs, self.tuning = blobs, tuning
        self.lease, self.stopping = lease, stopping or threading.Event()
        self.job_id: UUID = job.id
        self._lock = threading.Lock()
        self._last_progress = (-1, "")
        self._last_progress_at = 0.0
        self._logs: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._last_cancel_check = 0.0
        self._started = time.monotonic()
        self._cancelled = False
        self.lost = False
        self.timed_out = False

    # -- callbacks given to the engine ----------------------------------------------------

    def report(self, progress: int, stage: str) -> None:
        """Store progress if the stage changed or ``progress_interval_s`` passed."""
        now = time.monotonic()
        with self._lock:
            last_progress, last_stage = self._last_progress
            due = stage != last_stage or (
                progress != last_progress and now - self._last_progress_at >= self.tuning.progress_interval_s
            )
            if not due:
                return
            self._last_progress, self._last_progress_at = (progress, stage), now
            logs, self._logs = self._logs, []
            self._last_flush = now
        self._command(self.platform.update_progress, UpdateProgress(self.job_id, progress, stage, logs))

    def log(self, level: str, message: str) -> None:
        """Buffer a log line; flush the batch every ``log_batch_s``."""
        line = {"at": datetime.now(UTC).isoformat(), "level": level, "message": message[:10_000]}
        with self._lock:
            self._logs.append(line)
            due = time.monotonic() - self._last_flush >= self.tuning.log_batch_s
        if due:
            self.flush_logs()

    def flush_logs(self) -> None:
        """Store buffered log lines now."""
        with self._lock:
            logs, self._logs = self._logs, []
            self._last_flush = time.monotonic()
        if logs:
            self._command(self.platform.append_logs, AppendLogs(self.job_id, logs))

    def should_stop(self) -> bool:
        """Checkpoint: cancelled (checked in the store every ``cancel_check_s``), timed out,
        the processor stopping, or the lease lost?"""
        if self.lost or self._cancelled or self.stopping.is_set():
            return True
        if time.monotonic() - self._started > self.tuning.max_run_s:
            self.timed_out = True
            return True
        now = time.monotonic()
        if now - self._last_cancel_check >= self.tuning.cancel_check_s:
            self._last_cancel_check = now
            try:
                job = self.platform.get_job(self.job_id)
                self._cancelled = job.cancel_requested or job.status != RUNNING
            except Exception:
                log.warning("cancel check of job %s failed", self.job_id, exc_info=True)
        return self._cancelled

    # -- the run ------------------------------------------------------------------------------

    def execute(self) -> str:
        """Run the engine and record the outcome; returns what became of the job
        (completed, retrying, failed, cancelled, handed_back, lost).

        Never raises for engine failures: they end the job's attempt, not the processor.
        """
        work_dir = Path(tempfile.mkdtemp(prefix=f"aiorch-{self.job_id}-"))
        beating = threading.Event()
        heart = threading.Thread(target=self._heartbeat, args=(beating,), name=f"heartbeat-{self.job_id}", daemon=True)
        heart.start()
        try:
            return self._run(work_dir)
        finally:
            beating.set()
            heart.join(5)
            if self.lease is not None and not self.lost:
                self.lease.release()
            shutil.rmtree(work_dir, ignore_errors=True)

    def _heartbeat(self, done: threading.Event) -> None:
        while not done.wait(self.tuning.heartbeat_s):
            if self.lease is None:
                return
            try:
                if not self.lease.renew():
                    log.warning("job %s: lease lost to another processor; stopping", self.job_id)
                    self.lost = True
                    return
            except Exception:
                log.warning("job %s: heartbeat failed", self.job_id, exc_info=True)

    def _run(self, work_dir: Path) -> str:
        try:  # local copies under the work folder, removed with it after the run
            inputs = {field: self.blobs.local_copy(f["blob"], work_dir / "inputs") for field, f in self.job.input_files.items()}
        except Exception as exc:  # the store is unreachable (or lost the file): a later attempt may succeed
            log.warning("job %s: its input files could not be read", self.job_id, exc_info=True)
            return self._end("engine_error", f"the input files could not be read: {type(exc).__name__}", retryable=True)
        ectx = EngineContext(
            job_id=str(self.job_id),
            parameters={**self.job.parameters, **self._limit_parameters()},
            input_files=inputs,
            work_dir=work_dir,
            report=self.report,
            log=self.log,
            should_stop=self.should_stop,
            validated=validated_parameters(self.job.type, self.job.parameters),
        )
        self.report(0, "started")
        self.log("info", f"{self.engine.name} started on attempt {self.job.attempt}")
        try:
            result = self.engine.run(ectx)
        except EngineCancelled:
            return self._stopped()
        except EngineError as exc:
            return self._end(exc.code, exc.message, retryable=bool(getattr(exc, "retryable", False)))
        except Exception as exc:
            log.exception("engine %s crashed on job %s", self.engine.name, self.job_id)
            return self._end("engine_error", f"{type(exc).__name__}: {exc}", retryable=False)
        if self.lost:
            return "lost"
        try:
            files = [
                self.blobs.put_file(path, f"results/{self.job_id}/{self.job.attempt}/{path.name}").describe()
                for path in result.files
            ]
        except Exception as exc:
            log.warning("job %s: its result files could not be stored", self.job_id, exc_info=True)
            return self._end("engine_error", f"the result files could not be stored: {type(exc).__name__}", retryable=True)
        self.flush_logs()
        done = self._command(
            self.platform.complete_job,
            CompleteJob(self.job_id, {"files": files, "meta": result.meta}, self.ctx.actor.id, self.job.attempt),
        )
        return "completed" if done else "lost"

    def _stopped(self) -> str:
        """The engine stopped at a checkpoint: say why in the store."""
        self.flush_logs()
        if self.lost:
            return "lost"
        if self.timed_out:
            return self._end("timed_out", f"ran longer than {self.tuning.max_run_s:g} s", retryable=True)
        if self.stopping.is_set() and not self._cancelled:
            self._command(self.platform.release_job, ReleaseJob(self.job_id, self.ctx.actor.id))
            return "handed_back"
        self._command(self.platform.confirm_cancellation, ConfirmCancellation(self.job_id, "cancelled by user"))
        return "cancelled"

    def _limit_parameters(self) -> dict[str, Any]:
        """The owner's limits the engine enforces (``_max_input_duration_s`` seconds)."""
        limit = self.limits.get("max_input_duration_s")
        return {"_max_input_duration_s": float(limit)} if limit else {}

    def _end(self, code: str, message: str, *, retryable: bool) -> str:
        self.log("error", f"{code}: {message}")
        self.flush_logs()
        outcome: list[bool] = []

        def end(cmd: EndAttempt, ctx: Context) -> None:
            outcome.append(self.platform.end_attempt(cmd, ctx)[0])

        if not self._command(end, EndAttempt(self.job_id, code, message, retryable, self.ctx.actor.id, self.job.attempt)):
            return "lost"
        return "retrying" if outcome and outcome[0] else "failed"

    def _command(self, handler: Callable[[Any, Context], Any], cmd: Any) -> bool:
        """Send a command, retrying while the store is unreachable (the report is kept
        until it returns). A refused command (the job was cancelled or lost meanwhile) is
        logged, not raised; returns whether it was recorded."""
        for attempt in range(1_000_000):
            try:
                handler(cmd, self.ctx)
                return True
            except Conflict as exc:
                log.warning("job %s: %s refused: %s", self.job_id, type(cmd).__name__, exc.detail)
                self._cancelled = True
                return False
            except DomainError:
                log.exception("job %s: %s refused", self.job_id, type(cmd).__name__)
                return False
            except Exception:
                log.warning(
                    "job %s: %s failed (attempt %d); retrying",
                    self.job_id,
                    type(cmd).__name__,
                    attempt + 1,
                    exc_info=attempt == 0,
                )
                time.sleep(min(0.2 * 2**attempt, 5.0))
        return False
