"""Command handlers for jobs: submit, claim, report, finish, cancel, edit, retry, archive."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any
from uuid import UUID

from commands.agent import Agent, Provider
from commands.base import Position, ServiceBase, invalid
from commands.context import Context, acting_as
from commands.errors import ClaimLost, Conflict, InvalidCommand, LateReport, NotFound
from commands.job import FINISHED, Job
from commands.job_parameters import FILE_FIELDS, SCHEMAS, required_files, validate_parameters
from commands.job_reports import checked_reason, report_error, report_lines, report_reason, report_result, report_stage
from commands.messages import (
    AppendLogs,
    ArchiveJob,
    CancelJob,
    CompleteJob,
    ConfirmCancellation,
    EndAttempt,
    FailJob,
    ReleaseJob,
    RetryJob,
    StartJob,
    SubmitJob,
    UpdateJob,
    UpdateProgress,
)
from commands.permissions import require_admin, require_owner, require_writer
from commands.project import Project
from commands.text import clean_text
from commands.webhook_handlers import check_job_webhook

PRIORITIES = ("low", "normal", "high")


class JobHandlers(ServiceBase):
    """The job lifecycle. Users submit, edit, cancel and retry their jobs; processors
    (and admins) claim them and report."""

    # -- submission --------------------------------------------------------------------------

    def validate_job(
        self, job_type: str, parameters: dict[str, Any], file_fields: set[str], *, remote: bool = False
    ) -> dict[str, Any]:
        """Check a submission's type, parameters and file fields before anything is stored.

        Returns the validated parameters. Raises InvalidCommand (422) naming each problem,
        including a job type whose engine is not installed.
        """
        params = validate_parameters(job_type, parameters)
        missing = [] if remote else self.missing_engine(job_type)
        if missing:
            raise InvalidCommand(
                f"the {job_type} engine is not installed here: missing {'; '.join(missing)}",
                errors=[{"loc": ["body", "type"], "msg": f"engine missing: {'; '.join(missing)}"}],
            )
        refused = self.refuse_parameters(job_type, params)
        if refused:
            raise InvalidCommand(refused, errors=[{"loc": ["body", "parameters"], "msg": refused}])
        unknown = sorted(file_fields - set(FILE_FIELDS[job_type]))
        if unknown:
            raise invalid(unknown[0], f"a {job_type} job takes no file {unknown[0]!r}")
        absent = sorted(required_files(job_type, params) - file_fields)
        if absent:
            raise invalid(absent[0], f"a {job_type} job needs the file {absent[0]!r}")
        return params

    def prepare_submission(
        self, job_type: str, parameters: dict[str, Any], agent_id: UUID | None, file_fields: set[str], ctx: Context
    ) -> dict[str, Any]:
        """The parameters a submission will run with: the agent's configuration for what
        it omits, the user's ``default_language`` where a language is taken, validated.

        Raises Forbidden (viewer), NotFound/InvalidCommand (agent), Conflict (inactive agent).
        """
        require_writer(ctx.actor)
        if not isinstance(job_type, str):
            raise invalid("type", "must be a string")
        if not isinstance(parameters, dict):
            raise invalid("parameters", "must be an object")
        merged = dict(parameters)
        remote = False  # an agent whose provider is remote runs the job there: no local engine needed
        if agent_id is not None:
            agent = self._get(Agent, agent_id)
            if agent is None or agent.deleted or (not ctx.actor.is_admin and agent.owner_id != ctx.actor.id):
                raise invalid("agent", f"no agent {agent_id} that you own")
            if agent.status != "active":
                raise Conflict(f"agent {agent_id} is inactive")
            if agent.type != job_type:
                raise invalid("agent", f"agent {agent_id} is for {agent.type} jobs, not {job_type}")
            merged = {**agent.configuration, **merged}
            provider = self._get(Provider, agent.provider_id) if agent.provider_id else None
            remote = provider is not None and not provider.deleted and provider.enabled and provider.kind == "openai_compatible"
        schema = SCHEMAS.get(job_type)
        if schema is not None and "language" in schema.model_fields and "language" not in merged:
            language = self.effective_settings(ctx.actor.id).get("default_language")
            if language:
                merged["language"] = language
        return self.validate_job(job_type, merged, file_fields, remote=remote)

    def submit_job(self, cmd: SubmitJob, ctx: Context) -> tuple[UUID, Position]:
        """Submit a job into the actor's project; it waits pending for a processor.

        With an idempotency key the job id is derived from (user, key): a replay with the
        same request answers the first job; with another request it is refused (422).

        Raises Forbidden (viewer), InvalidCommand (type, parameters, files, project),
        Conflict (inactive agent).
        """
        if cmd.priority not in PRIORITIES:
            raise invalid("priority", f"must be one of {', '.join(PRIORITIES)}")
        key = cmd.idempotency_key and clean_text(cmd.idempotency_key, "Idempotency-Key", max_length=255, where="header")
        params = self.prepare_submission(cmd.type, cmd.parameters, cmd.agent_id, set(cmd.input_files), ctx)
        webhook, webhook_events = check_job_webhook(
            cmd.webhook, cmd.webhook_events, allow_private=getattr(self, "webhook_allow_private", False)
        )
        project = self._get(Project, cmd.project_id)
        if project is None or project.archived or (not ctx.actor.is_admin and project.owner_id != ctx.actor.id):
            raise invalid("project", f"no project {cmd.project_id} that you own")
        if key:
            earlier = self._get(Job, Job.create_id(ctx.actor.id, key))
            if earlier is not None:
                return self._replay(earlier, cmd)
        with acting_as(ctx):
            job = Job(
                project_id=str(project.id),
                owner_id=ctx.actor.id,
                type=cmd.type,
                parameters=params,
                input_files=cmd.input_files,
                priority=cmd.priority,
                agent_id=str(cmd.agent_id) if cmd.agent_id else None,
                idempotency_key=key or None,
                request_hash=cmd.request_hash,
                webhook=webhook,
                webhook_events=webhook_events,
            )
        try:
            return job.id, self._save(job)
        except Conflict:  # a concurrent replay with the same key won
            earlier = self._get(Job, job.id)
            if earlier is None or not key:
                raise
            return self._replay(earlier, cmd)

    def _replay(self, earlier: Job, cmd: SubmitJob) -> tuple[UUID, Position]:
        if earlier.request_hash != cmd.request_hash:
            raise InvalidCommand(
                "this Idempotency-Key was used with another request",
                errors=[{"loc": ["header", "Idempotency-Key"], "msg": "reused with another body"}],
            )
        return earlier.id, self.head()

    # -- reads of the write side --------------------------------------------------------------------

    def get_job(self, job_id: UUID | str) -> Job:
        """The job folded from the store. Raises NotFound."""
        return self._load(Job, job_id, "job")

    # -- processors ----------------------------------------------------------------------------------

    def start_job(self, cmd: StartJob, ctx: Context) -> Position:
        """Claim a pending job at ``expected_version``. Raises ClaimLost if anyone was first."""
        require_admin(ctx.actor, "claims")
        processor_id = clean_text(cmd.processor_id, "processor_id", min_length=1, max_length=200)
        job = self.get_job(cmd.job_id)
        if job.version != cmd.expected_version:
            raise ClaimLost(f"job {job.id} moved on to version {job.version}")
        with acting_as(ctx):
            job.start(processor_id)
        try:
            return self._save(job)
        except Conflict:
            raise ClaimLost(f"job {job.id} was claimed by another processor") from None

    def update_progress(self, cmd: UpdateProgress, ctx: Context) -> Position:
        """Record progress (and log lines) of a running job. Stage and lines of a processor
        are repaired, those of an admin checked. Raises Conflict, NotFound, Forbidden,
        InvalidCommand (an admin's stage or line breaks :mod:`commands.text`'s rule)."""
        require_admin(ctx.actor, "progress reports")
        stage, lines = report_stage(cmd.stage, ctx), report_lines(cmd.logs, ctx)

        def change(job: Job) -> None:
            job.report_progress(cmd.progress, stage)
            job.append_logs(lines)

        return self._change(Job, cmd.job_id, "job", ctx, change)

    def append_logs(self, cmd: AppendLogs, ctx: Context) -> Position:
        """Append log lines to a running job (a processor's repaired, an admin's checked)."""
        require_admin(ctx.actor, "log reports")
        lines = report_lines(cmd.lines, ctx)
        return self._change(Job, cmd.job_id, "job", ctx, lambda job: job.append_logs(lines))

    @staticmethod
    def _own_claim(job: Job, processor_id: str | None, attempt: int | None) -> None:
        """Raises LateReport unless the job runs the reporter's claim (processor and attempt)."""
        if (
            job.status != "running"
            or (processor_id is not None and job.processor_id != processor_id)
            or (attempt is not None and job.attempt != attempt)
        ):
            raise LateReport(
                f"job {job.id} is {job.status} as attempt {job.attempt} of {job.processor_id}; "
                f"a report of {processor_id} for attempt {attempt} is refused"
            )

    def complete_job(self, cmd: CompleteJob, ctx: Context) -> Position:
        """Complete a running job with its result. Raises LateReport (409) when the claim
        belongs to another processor or attempt: a late result is refused, so a job never
        completes twice nor has two result sets. The result is stored repaired
        (:func:`commands.text.sanitize_json`: a transcript with U+0000 keeps U+FFFD there)."""
        require_admin(ctx.actor, "results")
        result = report_result(cmd.result)

        def change(job: Job) -> None:
            if cmd.processor_id is not None or cmd.attempt is not None:
                self._own_claim(job, cmd.processor_id, cmd.attempt)
            job.complete(result)

        return self._change(Job, cmd.job_id, "job", ctx, change)

    def end_attempt(self, cmd: EndAttempt, ctx: Context) -> tuple[bool, Position]:
        """End a running attempt in error following the job type's retry policy; answers
        (will retry, position). Raises LateReport for a report of a lost claim."""
        require_admin(ctx.actor, "failures")
        code, message = report_error(cmd.code, cmd.message)
        outcome: list[bool] = []

        def change(job: Job) -> None:
            if cmd.processor_id is not None or cmd.attempt is not None:
                self._own_claim(job, cmd.processor_id, cmd.attempt)
            max_attempts, base_s, cap_s = self.retry_policy(job.type)
            delay = min(cap_s, base_s * 2 ** (job.attempt - 1))
            backoff = delay / 2 + random.uniform(0, delay / 2)
            outcome[:] = [job.end_attempt(code, message, retryable=cmd.retryable, max_attempts=max_attempts, backoff_s=backoff)]

        position = self._change(Job, cmd.job_id, "job", ctx, change)
        return outcome[0], position

    def release_job(self, cmd: ReleaseJob, ctx: Context) -> Position:
        """A stopping processor hands its running job back: pending again, same attempt."""
        require_admin(ctx.actor, "claims")
        reason = report_reason(cmd.reason)

        def change(job: Job) -> None:
            self._own_claim(job, cmd.processor_id, None)
            job.release(reason)

        return self._change(Job, cmd.job_id, "job", ctx, change)

    def fail_job(self, cmd: FailJob, ctx: Context) -> Position:
        """Fail a job with ``code`` and ``message`` (repaired, never refused). Raises Conflict if already finished."""
        require_admin(ctx.actor, "failures")
        code, message = report_error(cmd.code, cmd.message)
        return self._change(Job, cmd.job_id, "job", ctx, lambda job: job.fail(code, message))

    def confirm_cancellation(self, cmd: ConfirmCancellation, ctx: Context) -> Position:
        """Record a cancel-requested running job cancelled (processor checkpoint)."""
        require_admin(ctx.actor, "cancellations")
        reason = report_reason(cmd.reason)
        return self._change(Job, cmd.job_id, "job", ctx, lambda job: job.confirm_cancelled(reason))

    # -- users ---------------------------------------------------------------------------------------

    def _owned(self, ctx: Context, change: Callable[[Job], None]) -> Callable[[Job], None]:
        def run(job: Job) -> None:
            if job.archived:
                raise NotFound(f"no job {job.id}")
            require_owner(ctx.actor, job.owner_id, "job", job.id)
            change(job)

        return run

    def cancel_job(self, cmd: CancelJob, ctx: Context) -> tuple[str, Position]:
        """Ask a job to stop; answers (``cancelled`` | ``cancel_requested`` | ``completed``,
        position). Raises NotFound (not visible), Forbidden (viewer), Conflict (failed or cancelled).
        """
        reason = checked_reason(cmd.reason)
        outcome: list[str] = []
        position = self._change(Job, cmd.job_id, "job", ctx, self._owned(ctx, lambda job: outcome.append(job.cancel(reason))))
        return outcome[-1], position

    def update_job(self, cmd: UpdateJob, ctx: Context) -> Position:
        """Edit a pending job's parameters (re-validated) and/or priority. Raises Conflict
        when it is no longer pending."""
        if cmd.priority is not None and cmd.priority not in PRIORITIES:
            raise invalid("priority", f"must be one of {', '.join(PRIORITIES)}")

        def change(job: Job) -> None:
            changes: dict[str, Any] = {}
            if cmd.parameters is not None:
                changes["parameters"] = self.validate_job(job.type, cmd.parameters, set(job.input_files))
            if cmd.priority is not None:
                changes["priority"] = cmd.priority
            job.update(changes)

        return self._change(Job, cmd.job_id, "job", ctx, self._owned(ctx, change))

    def retry_job(self, cmd: RetryJob, ctx: Context) -> Position:
        """Send a failed or cancelled job back to pending with ``attempt + 1``."""
        reason = checked_reason(cmd.reason)
        return self._change(Job, cmd.job_id, "job", ctx, self._owned(ctx, lambda job: job.retry(reason)))

    def archive_job(self, cmd: ArchiveJob, ctx: Context) -> Position:
        """Hide a job from lists; a pending one is cancelled and a running one asked to stop."""

        def change(job: Job) -> None:
            if job.status not in FINISHED:
                job.cancel("the job was archived")
            job.archive()

        return self._change(Job, cmd.job_id, "job", ctx, self._owned(ctx, change))
