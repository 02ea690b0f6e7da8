"""Command handlers of a job's owner: submit, edit, cancel, retry, archive.

Each handler reads load → check → change → save (STYLE.md, *A command handler*) and runs in
:func:`~commands.base.retry_on_conflict`. A job a person may not see (another editor's,
or archived) is NotFound; a viewer who may see it is Forbidden."""

from __future__ import annotations

import random
from typing import Any
from uuid import UUID

from commands.agent import Agent, Provider
from commands.base import Position, ServiceBase, retry_on_conflict
from commands.context import Actor, Context
from commands.errors import ConcurrentWrite, Conflict, FieldError, InvalidCommand, invalid
from commands.job import FINISHED, Job
from commands.job_files import check_file
from commands.job_parameters import FILE_FIELDS, SCHEMAS, required_files, validate_parameters
from commands.job_reports import checked_reason
from commands.messages import ArchiveJob, CancelJob, RetryJob, SubmitJob, UpdateJob
from commands.permissions import require_owner, require_visible_job, require_writer
from commands.project import Project
from commands.text import clean_text
from commands.webhook_handlers import check_job_webhook
from events.enums import Priority

#: The priorities a job may have, lowest first (:class:`events.enums.Priority`).
PRIORITIES: tuple[Priority, ...] = tuple(Priority)
#: The header an Idempotency-Key arrives in names the field of its refusals.
IDEMPOTENCY_KEY = "Idempotency-Key"


def _priority(priority: object) -> None:
    if priority not in PRIORITIES:
        raise invalid("priority", f"must be one of {', '.join(PRIORITIES)}")


class JobHandlers(ServiceBase):
    """The job lifecycle as its owner sees it."""

    # -- loading -------------------------------------------------------------------------------

    def get_job(self, job_id: UUID | str) -> Job:
        """The job folded from the store. Raises NotFound."""
        return self._load(Job, job_id, "job")

    def _owned_job(self, job_id: UUID | str, actor: Actor) -> Job:
        """The job, loaded and checked: visible to ``actor`` and theirs to change.
        Raises NotFound (absent, archived, another editor's), Forbidden (a viewer)."""
        job = self.get_job(job_id)
        require_visible_job(actor, job.id, job.archived)
        require_owner(actor, job.owner_id, "job", job.id)
        return job

    # -- submission ------------------------------------------------------------------------------

    def validate_job(
        self, job_type: str, parameters: dict[str, Any], file_fields: set[str], *, remote: bool = False
    ) -> dict[str, Any]:
        """Check a submission's type, parameters and file fields before anything is stored.

        Returns the validated parameters. Raises InvalidCommand naming each problem,
        including a job type whose engine is not installed (unless it runs ``remote``).
        """
        params = validate_parameters(job_type, parameters)
        missing = [] if remote else self.policies.missing_engine(job_type)
        if missing:
            raise invalid(
                "type",
                f"engine missing: {'; '.join(missing)}",
                f"the {job_type} engine is not installed here: missing {'; '.join(missing)}",
            )
        refused = self.policies.refuse_parameters(job_type, params)
        if refused:
            raise invalid("parameters", refused)
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

        Raises Forbidden (viewer), InvalidCommand (agent, type, parameters, files),
        Conflict (inactive agent).
        """
        require_writer(ctx.actor)
        if not isinstance(job_type, str):
            raise invalid("type", "must be a string")
        if not isinstance(parameters, dict):
            raise invalid("parameters", "must be an object")
        merged, remote = dict(parameters), False
        if agent_id is not None:
            agent = self._submitting_agent(agent_id, job_type, ctx.actor)
            merged = {**agent.configuration, **merged}
            provider = self._get(Provider, agent.provider_id) if agent.provider_id else None
            # an agent whose provider is remote runs the job there: no local engine needed
            remote = provider is not None and not provider.deleted and provider.enabled and provider.kind == "openai_compatible"
        schema = SCHEMAS.get(job_type)
        if schema is not None and "language" in schema.model_fields and "language" not in merged:
            language = self.policies.effective_settings(ctx.actor.id).get("default_language")
            if language:
                merged["language"] = language
        return self.validate_job(job_type, merged, file_fields, remote=remote)

    def _submitting_agent(self, agent_id: UUID, job_type: str, actor: Actor) -> Agent:
        agent = self._get(Agent, agent_id)
        if agent is None or agent.deleted or (not actor.is_admin and agent.owner_id != actor.id):
            raise invalid("agent", f"no agent {agent_id} that you own")
        if agent.status != "active":
            raise Conflict(f"agent {agent_id} is inactive")
        if agent.type != job_type:
            raise invalid("agent", f"agent {agent_id} is for {agent.type} jobs, not {job_type}")
        return agent

    @retry_on_conflict
    def submit_job(self, cmd: SubmitJob, ctx: Context) -> tuple[UUID, Position]:
        """Submit a job into the actor's project; it waits pending for a processor.

        ``cmd.input_files`` maps a field to a stored blob's description (``content_type``
        sniffed). With an idempotency key the job id is derived from (user, key): a replay
        with the same ``request_hash`` answers the first job; with another it is refused.

        Raises Forbidden (viewer), InvalidCommand (type, parameters, files, project, key),
        UnsupportedMediaType (a file's type), Conflict (inactive agent).
        """
        _priority(cmd.priority)
        params = self.prepare_submission(cmd.type, cmd.parameters, cmd.agent_id, set(cmd.input_files), ctx)
        webhook, webhook_events = check_job_webhook(
            cmd.webhook, cmd.webhook_events, allow_private=self.policies.webhook_allow_private
        )
        for field, blob in cmd.input_files.items():
            check_file(cmd.type, field, blob.get("content_type"))
        key = cmd.idempotency_key and clean_text(cmd.idempotency_key, IDEMPOTENCY_KEY, max_length=255)
        project = self._get(Project, cmd.project_id)
        if project is None or project.archived or (not ctx.actor.is_admin and project.owner_id != ctx.actor.id):
            raise invalid("project", f"no project {cmd.project_id} that you own")
        earlier = self._get(Job, Job.create_id(ctx.actor.id, key)) if key else None
        if earlier is not None:
            return self._replay(earlier, cmd)
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
        except ConcurrentWrite:  # a concurrent replay with the same key won
            if not key:
                raise
            return self._replay(self.get_job(job.id), cmd)

    def _replay(self, earlier: Job, cmd: SubmitJob) -> tuple[UUID, Position]:
        if earlier.request_hash != cmd.request_hash:
            raise InvalidCommand(
                "this Idempotency-Key was used with another request",
                fields=[FieldError((IDEMPOTENCY_KEY,), "reused with another body")],
            )
        return earlier.id, self.head()

    # -- the owner's commands ---------------------------------------------------------------------

    @retry_on_conflict
    def cancel_job(self, cmd: CancelJob, ctx: Context) -> tuple[str, Position]:
        """Ask a job to stop; answers (``cancelled`` | ``cancel_requested`` | ``completed``,
        position). Raises NotFound (not visible), Forbidden (viewer), Conflict (failed or cancelled).
        """
        reason = checked_reason(cmd.reason)
        job = self._owned_job(cmd.job_id, ctx.actor)
        outcome = job.cancel(reason)
        return outcome, self._save(job)

    @retry_on_conflict
    def update_job(self, cmd: UpdateJob, ctx: Context) -> Position:
        """Edit a pending job's parameters (re-validated) and/or priority. Raises NotFound,
        Forbidden, InvalidCommand, Conflict (no longer pending)."""
        if cmd.priority is not None:
            _priority(cmd.priority)
        job = self._owned_job(cmd.job_id, ctx.actor)
        changes: dict[str, Any] = {}
        if cmd.parameters is not None:
            changes["parameters"] = self.validate_job(job.type, cmd.parameters, set(job.input_files))
        if cmd.priority is not None:
            changes["priority"] = cmd.priority
        job.update(changes)
        return self._save(job)

    @retry_on_conflict
    def retry_job(self, cmd: RetryJob, ctx: Context) -> Position:
        """Send a failed or cancelled job back to pending with ``attempt + 1``. Raises
        NotFound, Forbidden, Conflict (not failed or cancelled)."""
        reason = checked_reason(cmd.reason)
        job = self._owned_job(cmd.job_id, ctx.actor)
        job.retry(reason)
        return self._save(job)

    @retry_on_conflict
    def archive_job(self, cmd: ArchiveJob, ctx: Context) -> Position:
        """Hide a job from lists; a pending one is cancelled and a running one asked to
        stop. Raises NotFound, Forbidden."""
        job = self._owned_job(cmd.job_id, ctx.actor)
        if job.status not in FINISHED:
            job.cancel("the job was archived")
        job.archive()
        return self._save(job)


def backoff_s(attempt: int, base_s: float, cap_s: float) -> float:
    """Seconds before attempt ``attempt + 1``: "equal jitter" exponential backoff (AWS
    Architecture Blog, *Exponential Backoff and Jitter*): half of ``min(cap, base·2^(attempt-1))``
    plus a uniform random share of the other half."""
    delay = min(cap_s, base_s * 2.0 ** (attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)
