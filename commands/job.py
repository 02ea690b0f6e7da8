"""The Job aggregate: pending → running → completed | failed | cancelled."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.domain import event

from commands.aggregate import PlatformAggregate
from commands.errors import ClaimLost, Conflict, NotFound, invalid
from events.jobs import (
    JobArchived,
    JobCancelled,
    JobCancelRequested,
    JobCompleted,
    JobDeadLettered,
    JobFailed,
    JobLogsAppended,
    JobProgressed,
    JobRetried,
    JobStarted,
    JobSubmitted,
    JobUpdated,
)

PENDING, RUNNING, COMPLETED, FAILED, CANCELLED = "pending", "running", "completed", "failed", "cancelled"
FINISHED = frozenset({COMPLETED, FAILED, CANCELLED})
_IDEMPOTENCY_NAMESPACE = uuid.UUID("7d3f6a2e-1c4b-4e8f-9a0d-2b5c6e7f8a9b")


class Job(PlatformAggregate):
    """One unit of AI work of a ``type`` with ``parameters`` and input files."""

    JobSubmitted = JobSubmitted
    JobStarted = JobStarted
    JobProgressed = JobProgressed
    JobLogsAppended = JobLogsAppended
    JobCompleted = JobCompleted
    JobFailed = JobFailed
    JobCancelRequested = JobCancelRequested
    JobCancelled = JobCancelled
    JobUpdated = JobUpdated
    JobRetried = JobRetried
    JobArchived = JobArchived
    JobDeadLettered = JobDeadLettered

    @staticmethod
    def create_id(owner_id: str, idempotency_key: str | None) -> uuid.UUID:
        """UUID 5 of (owner, Idempotency-Key) when a key is given, so a concurrent replay
        conflicts in the store instead of creating a second job; else a random UUID."""
        if idempotency_key:
            return uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{owner_id}:{idempotency_key}")
        return uuid.uuid4()

    @event(JobSubmitted)
    def __init__(
        self,
        project_id: str,
        owner_id: str,
        type: str,
        parameters: dict[str, Any],
        input_files: dict[str, dict[str, Any]],
        priority: str,
        agent_id: str | None,
        idempotency_key: str | None,
        request_hash: str | None,
        webhook: str | None = None,
        webhook_events: list[str] | None = None,
        demo: bool = False,
    ) -> None:
        self.project_id = project_id
        self.webhook, self.webhook_events = webhook, webhook_events
        self.owner_id = owner_id
        self.type = type
        self.parameters = parameters
        self.input_files = input_files
        self.priority = priority
        self.agent_id = agent_id
        self.idempotency_key = idempotency_key
        self.request_hash = request_hash
        self.demo = demo
        self.status = PENDING
        self.progress = 0
        self.stage = "queued"
        self.attempt = 1
        self.archived = False
        self.processor_id: str | None = None
        self.cancel_requested = False
        self.result: dict[str, Any] | None = None
        self.error: dict[str, str] | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.not_before: str | None = None
        self.dead_lettered = False

    # -- commands ---------------------------------------------------------------------

    def start(self, processor_id: str) -> None:
        """Claim the pending job for ``processor_id``.

        Raises:
            ClaimLost: the job is not pending (already claimed, finished or cancelled).
        """
        if self.status != PENDING:
            raise ClaimLost(f"job {self.id} is {self.status}, not pending")
        self._started(processor_id=processor_id, attempt=self.attempt)

    def report_progress(self, progress: int, stage: str) -> None:
        """Record progress 0–100 (never decreasing within an attempt) and the stage name.

        Raises:
            Conflict: the job is not running.
            InvalidCommand: progress outside 0–100.
        """
        self._require_running()
        if not 0 <= progress <= 100:
            raise invalid("progress", "0–100", "progress must be an integer 0–100")
        self._progressed(progress=max(progress, self.progress), stage=stage or self.stage)

    def append_logs(self, lines: list[dict[str, Any]]) -> None:
        """Append a batch of ``{at, level, message}`` lines to a running job."""
        self._require_running()
        if lines:
            self._logs_appended(lines=lines)

    def complete(self, result: dict[str, Any]) -> None:
        """Finish the running job with ``result`` ``{files, meta}``.

        Raises:
            Conflict: not running (a late or second result is refused).
        """
        self._require_running()
        self._completed(result=result)

    def fail(self, code: str, message: str) -> None:
        """Fail the job (running, or pending when its input is refused before start)."""
        if self.status in FINISHED:
            raise Conflict(f"job {self.id} is already {self.status}")
        self._failed(code=code, message=message)

    def cancel(self, reason: str) -> str:
        """Ask the job to stop; answers ``cancelled``, ``cancel_requested`` or ``completed``.

        A pending job is cancelled at once; a running one is marked ``cancel_requested``
        and stops at its processor's next checkpoint; a completed one stays completed.

        Raises:
            Conflict: the job already failed or was cancelled.
        """
        if self.status == PENDING:
            self._cancelled(reason=reason)
            return CANCELLED
        if self.status == RUNNING:
            if not self.cancel_requested:
                self._cancel_requested(reason=reason)
            return "cancel_requested"
        if self.status == COMPLETED:
            return COMPLETED
        raise Conflict(f"job {self.id} is already {self.status}")

    def confirm_cancelled(self, reason: str) -> None:
        """The processor stopped the engine at a checkpoint: record the job cancelled."""
        self._require_running()
        self._cancelled(reason=reason)

    def update(self, changes: dict[str, Any]) -> None:
        """Edit ``parameters`` / ``priority`` of a pending job. Raises Conflict otherwise."""
        if self.status != PENDING:
            raise Conflict(f"job {self.id} is {self.status}; only pending jobs can be edited")
        real = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if real:
            self._updated(changes=real)

    def retry(self, reason: str) -> None:
        """Send a failed or cancelled job back to pending as the next attempt.

        Raises:
            Conflict: the job is pending, running or completed.
        """
        if self.status not in (FAILED, CANCELLED):
            raise Conflict(f"job {self.id} is {self.status}; only failed or cancelled jobs can be retried")
        self._retried(attempt=self.attempt + 1, reason=reason, type=self.type, priority=self.priority, not_before=None)

    def end_attempt(self, code: str, message: str, *, retryable: bool, max_attempts: int, backoff_s: float) -> bool:
        """A running attempt ended in error: with attempts left and a ``retryable`` error,
        back to pending as the next attempt (claimable after ``backoff_s`` seconds);
        otherwise failed for good and dead-lettered. Returns True when it will retry.

        Raises:
            Conflict: the job is not running.
        """
        self._require_running()
        reason = f"{code}: {message}"
        if retryable and self.attempt < max_attempts:
            not_before = (datetime.now(UTC) + timedelta(seconds=backoff_s)).isoformat() if backoff_s > 0 else None
            self._retried(attempt=self.attempt + 1, reason=reason, type=self.type, priority=self.priority, not_before=not_before)
            return True
        self._failed(code=code, message=message)
        self._dead_lettered(code=code, message=message, attempts=self.attempt, type=self.type)
        return False

    def release(self, reason: str) -> None:
        """A processor hands the running job back (graceful shutdown): pending again, same
        attempt, claimable at once. Raises Conflict if not running."""
        self._require_running()
        self._retried(attempt=self.attempt, reason=reason, type=self.type, priority=self.priority, not_before=None)

    def archive(self) -> None:
        """Hide the job from lists (history stays). Raises NotFound if already archived."""
        if self.archived:
            raise NotFound(f"no job {self.id}")
        self._archived()

    def _require_running(self) -> None:
        if self.status != RUNNING:
            raise Conflict(f"job {self.id} is {self.status}, not running")

    # -- mutators (re-run on replay) --------------------------------------------------------

    @event(JobUpdated)
    def _updated(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            setattr(self, key, value)

    @event(JobRetried)
    def _retried(self, attempt: int, reason: str, type: str, priority: str, not_before: str | None = None) -> None:
        self.not_before, self.dead_lettered = not_before, False
        self.status, self.attempt, self.progress, self.stage = PENDING, attempt, 0, "queued"
        self.processor_id, self.cancel_requested, self.result, self.error = None, False, None, None
        self.started_at = self.finished_at = None

    @event(JobDeadLettered)
    def _dead_lettered(self, code: str, message: str, attempts: int, type: str) -> None:
        self.dead_lettered = True

    @event(JobArchived)
    def _archived(self) -> None:
        self.archived = True

    @event(JobStarted)
    def _started(self, processor_id: str, attempt: int, timestamp: datetime | None = None) -> None:
        self.status, self.processor_id, self.attempt = RUNNING, processor_id, attempt
        self.stage, self.cancel_requested, self.started_at = "started", False, timestamp

    @event(JobProgressed)
    def _progressed(self, progress: int, stage: str) -> None:
        self.progress, self.stage = progress, stage

    @event(JobLogsAppended)
    def _logs_appended(self, lines: list[dict[str, Any]]) -> None:
        pass

    @event(JobCompleted)
    def _completed(self, result: dict[str, Any], timestamp: datetime | None = None) -> None:
        self.status, self.result, self.progress, self.stage = COMPLETED, result, 100, "done"
        self.finished_at = timestamp

    @event(JobFailed)
    def _failed(self, code: str, message: str, timestamp: datetime | None = None) -> None:
        self.status, self.stage, self.error = FAILED, "failed", {"code": code, "message": message}
        self.finished_at = timestamp

    @event(JobCancelRequested)
    def _cancel_requested(self, reason: str) -> None:
        self.cancel_requested = True

    @event(JobCancelled)
    def _cancelled(self, reason: str, timestamp: datetime | None = None) -> None:
        self.status, self.stage, self.cancel_requested = CANCELLED, "cancelled", True
        self.error = {"code": "cancelled", "message": reason}
        self.finished_at = timestamp
