"""Command handlers of processors (and admins' external workers): claim a job, report
progress, logs and results, end an attempt, hand a job back, fail, confirm a cancel.

Each reads load → check → change → save and runs in :func:`~commands.base.retry_on_conflict`."""

from __future__ import annotations

from commands.base import Position, retry_on_conflict
from commands.context import Context
from commands.errors import ClaimLost, ConcurrentWrite, LateReport
from commands.handle_jobs import JobHandlers, backoff_s
from commands.job import Job
from commands.job_reports import report_error, report_lines, report_reason, report_result, report_stage
from commands.messages import (
    AppendLogs,
    CompleteJob,
    ConfirmCancellation,
    EndAttempt,
    FailJob,
    ReleaseJob,
    StartJob,
    UpdateProgress,
)
from commands.permissions import require_admin, require_visible_job
from commands.text import clean_text


def own_claim(job: Job, processor_id: str | None, attempt: int | None) -> None:
    """Raises LateReport unless the job runs the reporter's claim (processor and attempt;
    ``None`` matches any)."""
    if (
        job.status != "running"
        or (processor_id is not None and job.processor_id != processor_id)
        or (attempt is not None and job.attempt != attempt)
    ):
        raise LateReport(
            f"job {job.id} is {job.status} as attempt {job.attempt} of {job.processor_id}; "
            f"a report of {processor_id} for attempt {attempt} is refused"
        )


class ReportHandlers(JobHandlers):
    """What processors tell about the jobs they run."""

    def _reported_job(self, job_id: object, ctx: Context) -> Job:
        job = self.get_job(str(job_id))
        require_visible_job(ctx.actor, job.id, job.archived)
        return job

    @retry_on_conflict
    def start_job(self, cmd: StartJob, ctx: Context) -> Position:
        """Claim a pending job at ``expected_version``. Raises ClaimLost if anyone was first."""
        require_admin(ctx.actor, "claims")
        processor_id = clean_text(cmd.processor_id, "processor_id", min_length=1, max_length=200)
        job = self.get_job(cmd.job_id)
        if job.version != cmd.expected_version:
            raise ClaimLost(f"job {job.id} moved on to version {job.version}")
        job.start(processor_id)
        try:
            return self._save(job)
        except ConcurrentWrite:
            raise ClaimLost(f"job {job.id} was claimed by another processor") from None

    @retry_on_conflict
    def update_progress(self, cmd: UpdateProgress, ctx: Context) -> Position:
        """Record progress (and log lines) of a running job. Stage and lines of a processor
        are repaired, those of an admin checked. Raises Forbidden, NotFound (an admin's
        report on an archived job), Conflict, InvalidCommand."""
        require_admin(ctx.actor, "progress reports")
        stage, lines = report_stage(cmd.stage, ctx), report_lines(cmd.logs, ctx)
        job = self._reported_job(cmd.job_id, ctx)
        job.report_progress(cmd.progress, stage)
        job.append_logs(lines)
        return self._save(job)

    @retry_on_conflict
    def append_logs(self, cmd: AppendLogs, ctx: Context) -> Position:
        """Append log lines to a running job (a processor's repaired, an admin's checked)."""
        require_admin(ctx.actor, "log reports")
        lines = report_lines(cmd.lines, ctx)
        job = self._reported_job(cmd.job_id, ctx)
        job.append_logs(lines)
        return self._save(job)

    @retry_on_conflict
    def complete_job(self, cmd: CompleteJob, ctx: Context) -> Position:
        """Complete a running job with its result. Raises LateReport when the claim
        belongs to another processor or attempt: a late result is refused, so a job never
        completes twice nor has two result sets. The result is stored repaired
        (:func:`commands.text.sanitize_json`: a transcript with U+0000 keeps U+FFFD there)."""
        require_admin(ctx.actor, "results")
        result = report_result(cmd.result)
        job = self.get_job(cmd.job_id)
        if cmd.processor_id is not None or cmd.attempt is not None:
            own_claim(job, cmd.processor_id, cmd.attempt)
        job.complete(result)
        return self._save(job)

    @retry_on_conflict
    def end_attempt(self, cmd: EndAttempt, ctx: Context) -> tuple[bool, Position]:
        """End a running attempt in error following the job type's retry policy; answers
        (will retry, position). Raises LateReport for a report of a lost claim."""
        require_admin(ctx.actor, "failures")
        code, message = report_error(cmd.code, cmd.message)
        job = self.get_job(cmd.job_id)
        if cmd.processor_id is not None or cmd.attempt is not None:
            own_claim(job, cmd.processor_id, cmd.attempt)
        max_attempts, base_s, cap_s = self.policies.retry_policy(job.type)
        backoff = backoff_s(job.attempt, base_s, cap_s)
        retries = job.end_attempt(code, message, retryable=cmd.retryable, max_attempts=max_attempts, backoff_s=backoff)
        return retries, self._save(job)

    @retry_on_conflict
    def release_job(self, cmd: ReleaseJob, ctx: Context) -> Position:
        """A stopping processor hands its running job back: pending again, same attempt."""
        require_admin(ctx.actor, "claims")
        reason = report_reason(cmd.reason)
        job = self.get_job(cmd.job_id)
        own_claim(job, cmd.processor_id, None)
        job.release(reason)
        return self._save(job)

    @retry_on_conflict
    def fail_job(self, cmd: FailJob, ctx: Context) -> Position:
        """Fail a job with ``code`` and ``message`` (repaired, never refused). Raises Conflict if already finished."""
        require_admin(ctx.actor, "failures")
        code, message = report_error(cmd.code, cmd.message)
        job = self.get_job(cmd.job_id)
        job.fail(code, message)
        return self._save(job)

    @retry_on_conflict
    def confirm_cancellation(self, cmd: ConfirmCancellation, ctx: Context) -> Position:
        """Record a cancel-requested running job cancelled (processor checkpoint)."""
        require_admin(ctx.actor, "cancellations")
        reason = report_reason(cmd.reason)
        job = self.get_job(cmd.job_id)
        job.confirm_cancelled(reason)
        return self._save(job)
