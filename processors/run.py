"""One run of one claimed job: coalesced progress, batched logs, cancellation checkpoints,
result files, and the final command (complete, fail or cancelled)."""

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
from typing import Any
from uuid import UUID

from commands.context import Context
from commands.errors import Conflict, DomainError
from commands.job import RUNNING, Job
from commands.messages import AppendLogs, CompleteJob, ConfirmCancellation, FailJob, UpdateProgress
from commands.service import Platform
from processors.engines.base import Engine, EngineContext, EngineError, JobCancelled

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunTuning:
    """How often a run writes to the store (seconds)."""

    progress_interval_s: float = 1.0
    log_batch_s: float = 1.0
    cancel_check_s: float = 0.5


class JobRun:
    """Runs ``engine`` on ``job`` (already claimed by this processor) and reports to the store.

    Progress is coalesced: at most one stored event per ``progress_interval_s``, plus every
    change of stage (ARCHITECTURE.md, invariant 8). Log lines are stored in batches.
    """

    def __init__(
        self,
        platform: Platform,
        job: Job,
        engine: Engine,
        ctx: Context,
        blob_path: Callable[[str], Path],
        store_result: Callable[[Path, str], dict[str, Any]],
        tuning: RunTuning,
        limits: dict[str, Any] | None = None,
    ) -> None:
        self.platform, self.job, self.engine, self.ctx = platform, job, engine, ctx
        self.limits = limits or {}
        self.blob_path, self.store_result, self.tuning = blob_path, store_result, tuning
        self.job_id: UUID = job.id
        self._lock = threading.Lock()
        self._last_progress = (-1, "")
        self._last_progress_at = 0.0
        self._logs: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._last_cancel_check = 0.0
        self._stop_requested = False

    # -- callbacks given to the engine ------------------------------------------------------

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
        """Checkpoint: has cancellation been requested (checked every ``cancel_check_s``)?"""
        if self._stop_requested:
            return True
        now = time.monotonic()
        if now - self._last_cancel_check >= self.tuning.cancel_check_s:
            self._last_cancel_check = now
            try:
                job = self.platform.get_job(self.job_id)
                self._stop_requested = job.cancel_requested or job.status != RUNNING
            except Exception:
                log.warning("cancel check of job %s failed", self.job_id, exc_info=True)
        return self._stop_requested

    # -- the run -----------------------------------------------------------------------------

    def execute(self) -> str:
        """Run the engine and record the outcome; returns the job's final status.

        Never raises for engine failures: they fail the job, not the processor.
        """
        work_dir = Path(tempfile.mkdtemp(prefix=f"aiorch-{self.job_id}-"))
        try:
            inputs = {field: self.blob_path(f["blob"]) for field, f in self.job.input_files.items()}
            ectx = EngineContext(
                job_id=str(self.job_id),
                parameters={**self.job.parameters, **self._limit_parameters()},
                input_files=inputs,
                work_dir=work_dir,
                report=self.report,
                log=self.log,
                should_stop=self.should_stop,
            )
            self.report(0, "started")
            self.log("info", f"{self.engine.name} started on attempt {self.job.attempt}")
            try:
                result = self.engine.run(ectx)
            except JobCancelled:
                self.flush_logs()
                self._command(self.platform.confirm_cancellation, ConfirmCancellation(self.job_id, "cancelled by user"))
                return "cancelled"
            except EngineError as exc:
                return self._fail(exc.code, exc.message)
            except Exception as exc:
                log.exception("engine %s crashed on job %s", self.engine.name, self.job_id)
                return self._fail("engine_error", f"{type(exc).__name__}: {exc}")
            files = [self.store_result(path, f"results/{self.job_id}/{self.job.attempt}/{path.name}") for path in result.files]
            self.flush_logs()
            self._command(
                self.platform.complete_job, CompleteJob(self.job_id, {"files": files, "meta": result.meta}, self.ctx.actor.id)
            )
            return "completed"
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)

    def _limit_parameters(self) -> dict[str, Any]:
        """The owner's limits the engine enforces (``_max_input_duration_s`` seconds)."""
        limit = self.limits.get("max_input_duration_s")
        return {"_max_input_duration_s": float(limit)} if limit else {}

    def _fail(self, code: str, message: str) -> str:
        self.log("error", message)
        self.flush_logs()
        self._command(self.platform.fail_job, FailJob(self.job_id, code, message))
        return "failed"

    def _command(self, handler: Callable[[Any, Context], Any], cmd: Any) -> None:
        """Send a command, retrying briefly while the store is unreachable. A refused
        command (the job was cancelled or lost meanwhile) is logged, not raised."""
        for attempt in range(30):
            try:
                handler(cmd, self.ctx)
                return
            except Conflict as exc:
                log.info("job %s: %s refused: %s", self.job_id, type(cmd).__name__, exc.detail)
                self._stop_requested = True
                return
            except DomainError:
                log.exception("job %s: %s refused", self.job_id, type(cmd).__name__)
                return
            except Exception:
                log.warning(
                    "job %s: %s failed (attempt %d); retrying",
                    self.job_id,
                    type(cmd).__name__,
                    attempt + 1,
                    exc_info=attempt == 0,
                )
                time.sleep(min(0.2 * 2**attempt, 5.0))
        log.error("job %s: gave up sending %s", self.job_id, type(cmd).__name__)
