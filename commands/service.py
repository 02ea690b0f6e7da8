"""The application service: one method per command that loads, checks, changes and saves,
and returns the global position of its last stored event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from commands.context import Actor, Context, acting_as
from commands.errors import ClaimLost, Conflict, Forbidden, InvalidCommand, NotFound
from commands.job import Job
from commands.job_parameters import FILE_FIELDS, required_files, validate_parameters
from commands.messages import (
    AppendLogs,
    CancelJob,
    CompleteJob,
    ConfirmCancellation,
    CreateProject,
    CreateUser,
    FailJob,
    StartJob,
    SubmitJob,
    UpdateProgress,
)
from commands.project import Project
from commands.security import hash_password
from commands.user import User, user_id_for
from events.users import ROLES

Position = int
PRIORITIES = ("low", "normal", "high")
_CONFLICT_RETRIES = 5


def _invalid(loc: str, msg: str) -> InvalidCommand:
    return InvalidCommand(msg, errors=[{"loc": ["body", loc], "msg": msg}])


class Platform(Application):
    """The write side. Its events live in PostgreSQL table ``aiorch_events``.

    ``missing_engine(type)`` (set by the composition root) names what a job type's engine
    lacks; an empty list means it can run.
    """

    name = "aiorch"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self.missing_engine: Callable[[str], list[str]] = lambda _type: []

    # -- users and projects ------------------------------------------------------------

    def create_user(self, cmd: CreateUser, ctx: Context) -> tuple[UUID, Position]:
        """Create a user. Raises Forbidden (not admin), InvalidCommand, Conflict (name taken)."""
        if not ctx.actor.is_admin:
            raise Forbidden("only admins create users")
        username = cmd.username.strip()
        if (
            not username
            or len(username) > 150
            or not username.replace("_", "").replace("-", "").replace(".", "").replace("@", "").isalnum()
        ):
            raise _invalid("username", "1–150 letters, digits and @.-_")
        if cmd.role not in ROLES:
            raise _invalid("role", f"must be one of {', '.join(ROLES)}")
        if len(cmd.password) < 8:
            raise _invalid("password", "must be at least 8 characters")
        with acting_as(ctx):
            user = User(username=username, role=cmd.role, email=cmd.email, password_hash=hash_password(cmd.password))
        try:
            return user.id, self._save(user)
        except Conflict:
            raise Conflict(f"a user named {username!r} exists") from None

    def user_exists(self, username: str) -> bool:
        """Whether a user of that name is in the store."""
        try:
            self.repository.get(user_id_for(username))
        except AggregateNotFoundError:
            return False
        return True

    def create_project(self, cmd: CreateProject, ctx: Context) -> tuple[UUID, Position]:
        """Create a project owned by the actor. Raises Forbidden (viewer), InvalidCommand."""
        if ctx.actor.role not in ("admin", "editor"):
            raise Forbidden("viewers cannot create projects")
        name = cmd.name.strip()
        if not name or len(name) > 200:
            raise _invalid("name", "1–200 characters")
        if len(cmd.description) > 10_000:
            raise _invalid("description", "at most 10,000 characters")
        with acting_as(ctx):
            project = Project(name=name, description=cmd.description, owner_id=ctx.actor.id)
        return project.id, self._save(project)

    # -- jobs ----------------------------------------------------------------------------

    def validate_job(self, job_type: str, parameters: dict[str, Any], file_fields: set[str]) -> dict[str, Any]:
        """Check a submission's type, parameters and file fields before anything is stored.

        Returns the validated parameters. Raises InvalidCommand (422) naming each problem,
        including a job type whose engine is not installed.
        """
        params = validate_parameters(job_type, parameters)
        missing = self.missing_engine(job_type)
        if missing:
            raise InvalidCommand(
                f"the {job_type} engine is not installed here: missing {', '.join(missing)}",
                errors=[{"loc": ["body", "type"], "msg": f"engine missing: {', '.join(missing)}"}],
            )
        allowed = set(FILE_FIELDS[job_type])
        unknown = file_fields - allowed
        if unknown:
            raise _invalid(sorted(unknown)[0], f"a {job_type} job takes no file {sorted(unknown)[0]!r}")
        absent = required_files(job_type, params) - file_fields
        if absent:
            raise _invalid(sorted(absent)[0], f"a {job_type} job needs the file {sorted(absent)[0]!r}")
        return params

    def submit_job(self, cmd: SubmitJob, ctx: Context) -> tuple[UUID, Position]:
        """Submit a job into the actor's project; it waits pending for a processor.

        Raises Forbidden (viewer), InvalidCommand (bad type, parameters, files or project).
        """
        if ctx.actor.role not in ("admin", "editor"):
            raise Forbidden("viewers cannot submit jobs")
        if cmd.priority not in PRIORITIES:
            raise _invalid("priority", f"must be one of {', '.join(PRIORITIES)}")
        params = self.validate_job(cmd.type, cmd.parameters, set(cmd.input_files))
        project = self._get(Project, cmd.project_id)
        if project is None or (not ctx.actor.is_admin and project.owner_id != ctx.actor.id):
            raise _invalid("project", f"no project {cmd.project_id} that you own")
        with acting_as(ctx):
            job = Job(
                project_id=str(project.id),
                owner_id=ctx.actor.id,
                type=cmd.type,
                parameters=params,
                input_files=cmd.input_files,
                priority=cmd.priority,
            )
        return job.id, self._save(job)

    def get_job(self, job_id: UUID) -> Job:
        """The job folded from the store. Raises NotFound."""
        job = self._get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        return job

    def start_job(self, cmd: StartJob, ctx: Context) -> Position:
        """Claim a pending job at ``expected_version``. Raises ClaimLost if anyone was first."""
        job = self.get_job(cmd.job_id)
        if job.version != cmd.expected_version:
            raise ClaimLost(f"job {job.id} moved on to version {job.version}")
        with acting_as(ctx):
            job.start(cmd.processor_id)
        try:
            return self._save(job)
        except Conflict:
            raise ClaimLost(f"job {job.id} was claimed by another processor") from None

    def update_progress(self, cmd: UpdateProgress, ctx: Context) -> Position:
        """Record progress (and log lines) of a running job. Raises Conflict, NotFound."""

        def change(job: Job) -> None:
            job.report_progress(cmd.progress, cmd.stage)
            job.append_logs(cmd.logs)

        return self._change_job(cmd.job_id, ctx, change, admin_only=True)

    def append_logs(self, cmd: AppendLogs, ctx: Context) -> Position:
        """Append log lines to a running job."""
        return self._change_job(cmd.job_id, ctx, lambda job: job.append_logs(cmd.lines), admin_only=True)

    def complete_job(self, cmd: CompleteJob, ctx: Context) -> Position:
        """Complete a running job with its result. Raises Conflict (not running, or the
        claim belongs to another processor)."""

        def change(job: Job) -> None:
            if cmd.processor_id is not None and job.processor_id != cmd.processor_id:
                raise Conflict(f"job {job.id} is claimed by {job.processor_id}, not {cmd.processor_id}")
            job.complete(cmd.result)

        return self._change_job(cmd.job_id, ctx, change, admin_only=True)

    def fail_job(self, cmd: FailJob, ctx: Context) -> Position:
        """Fail a job with ``code`` and ``message``. Raises Conflict if already finished."""
        return self._change_job(cmd.job_id, ctx, lambda job: job.fail(cmd.code, cmd.message), admin_only=True)

    def cancel_job(self, cmd: CancelJob, ctx: Context) -> tuple[str, Position | None]:
        """Ask a job to stop; answers (``cancelled`` | ``cancel_requested`` | ``completed``,
        position of the last event or None when nothing was recorded).

        Raises NotFound (not visible), Forbidden (viewer), Conflict (failed or cancelled).
        """
        outcome: list[str] = []

        def change(job: Job) -> None:
            outcome[:] = [job.cancel(cmd.reason)]

        position = self._change_job(cmd.job_id, ctx, change, admin_only=False)
        return outcome[0], position

    def confirm_cancellation(self, cmd: ConfirmCancellation, ctx: Context) -> Position:
        """Record a cancel-requested running job cancelled (processor checkpoint)."""
        return self._change_job(cmd.job_id, ctx, lambda job: job.confirm_cancelled(cmd.reason), admin_only=True)

    # -- plumbing ------------------------------------------------------------------------

    def _change_job(self, job_id: UUID, ctx: Context, change: Callable[[Job], None], *, admin_only: bool) -> Position:
        """Load, authorize, change and save a job, retrying on a concurrent write (the
        command carries no expected version, so a fresh load is the right base)."""
        for attempt in range(_CONFLICT_RETRIES):
            job = self.get_job(job_id)
            self._authorize_job(job, ctx.actor, admin_only=admin_only)
            with acting_as(ctx):
                change(job)
            if not job.pending_events:
                return self.recorder.max_notification_id() or 0
            try:
                return self._save(job)
            except Conflict:
                if attempt == _CONFLICT_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _authorize_job(job: Job, actor: Actor, *, admin_only: bool) -> None:
        if actor.is_admin:
            return
        if admin_only:
            raise Forbidden("only admins and processors report on jobs")
        if actor.role == "viewer":
            raise Forbidden("viewers cannot change jobs")
        if job.owner_id != actor.id:
            raise NotFound(f"no job {job.id}")

    def _get(self, cls: type[Any], aggregate_id: UUID) -> Any:
        try:
            agg: Any = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return agg if isinstance(agg, cls) else None

    def _save(self, *aggregates: Any) -> Position:
        try:
            recordings = self.save(*aggregates)
        except IntegrityError as exc:
            raise Conflict("the aggregate was changed concurrently; reload and retry") from exc
        return recordings[-1].notification.id if recordings else 0
