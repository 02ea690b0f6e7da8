"""Read-model tables (SQLAlchemy 2 Core), created by the projector.

Each build of the read models is a *generation* with its own physical tables
(``rm_jobs_g3``, ...). Readers use views of stable names (``rm_jobs``) that point at the
serving generation; a rebuild fills the next generation beside it and switches every view
in one transaction (blue/green, ARCHITECTURE.md invariant 4): no read-model migrations and
no downtime during rebuilds.
"""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()  # tables shared by every generation: tracking, registry, failures
Json = JSON().with_variant(JSONB(), "postgresql")

tracking = Table(
    "projection_tracking",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

registry = Table(
    "projection_registry",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("switched_at", DateTime(timezone=True), nullable=False),
)

#: Events a follower could not apply and parked (ARCHITECTURE.md invariant 11): one table
#: for every projection generation (``name`` is its tracking name) and for the outbox relay
#: (``name`` ``relay``). ``state``: parked (waiting), retried (applied later), skipped (an
#: operator gave up on it, ``reason`` says why; the skip is also in the audit log).
failures = Table(
    "projection_failures",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("position", BigInteger, primary_key=True),
    Column("topic", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("state", String(10), nullable=False, index=True),
    Column("reason", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def _users(md: MetaData, g: str) -> Table:
    return Table(
        f"rm_users{g}",
        md,
        Column("id", String(36), primary_key=True),
        Column("username", String(150), nullable=False, unique=True),
        Column("email", String(254)),
        Column("role", String(20), nullable=False),
        Column("is_active", Boolean, nullable=False, default=True),
        Column("password_hash", Text, nullable=False),
        # tokens issued before this instant are revoked, except session ``kept_session``
        Column("tokens_valid_after", DateTime(timezone=True)),
        Column("kept_session", String(64)),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column("position", BigInteger, nullable=False),
    )


def _projects(md: MetaData, g: str) -> Table:
    return Table(
        f"rm_projects{g}",
        md,
        Column("id", String(36), primary_key=True),
        Column("name", String(200), nullable=False),
        Column("description", Text, nullable=False),
        Column("owner_id", String(36), nullable=False, index=True),
        Column("owner_username", String(150)),
        Column("jobs_count", Integer, nullable=False, default=0),
        Column("archived", Boolean, nullable=False, default=False),
        Column("created_at", DateTime(timezone=True), nullable=False, index=True),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column("position", BigInteger, nullable=False),
    )


def _jobs(md: MetaData, g: str) -> Table:
    return Table(
        f"rm_jobs{g}",
        md,
        Column("id", String(36), primary_key=True),
        Column("project_id", String(36), nullable=False, index=True),
        Column("type", String(40), nullable=False),
        Column("status", String(20), nullable=False),
        Column("progress", Integer, nullable=False),
        Column("stage", String(100), nullable=False),
        Column("priority", String(10), nullable=False),
        Column("attempt", Integer, nullable=False),
        Column("parameters", Json, nullable=False),
        Column("agent_id", String(36)),
        Column("input_files", Json, nullable=False),
        Column("created_by_id", String(36), nullable=False, index=True),
        Column("created_by_username", String(150)),
        Column("processor_id", String(200)),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column("started_at", DateTime(timezone=True)),
        Column("finished_at", DateTime(timezone=True)),
        Column("error", Json),
        Column("has_result", Boolean, nullable=False, default=False),
        Column("cancel_requested", Boolean, nullable=False, default=False),
        Column("archived", Boolean, nullable=False, default=False),
        Column("demo", Boolean, nullable=False, default=False, server_default=false()),
        Column("version", Integer, nullable=False),
        Column("position", BigInteger, nullable=False),
        Index(f"ix_rm_jobs{g}_status_created", "status", "created_at"),
        Index(f"ix_rm_jobs{g}_created", "created_at"),
    )


def _job_results(md: MetaData, g: str) -> Table:
    return Table(
        f"rm_job_results{g}",
        md,
        Column("id", String(36), primary_key=True),
        Column("job_id", String(36), nullable=False, unique=True),
        Column("owner_id", String(36), nullable=False, index=True),
        Column("files", Json, nullable=False),
        Column("meta", Json, nullable=False),
        Column("finished_at", DateTime(timezone=True), nullable=False, index=True),
        Column("position", BigInteger, nullable=False),
    )


def _job_logs(md: MetaData, g: str) -> Table:
    return Table(
        f"rm_job_logs{g}",
        md,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("job_id", String(36), nullable=False),
        Column("position", BigInteger, nullable=False),
        Column("seq", Integer, nullable=False),
        Column("at", DateTime(timezone=True), nullable=False),
        Column("level", String(10), nullable=False),
        Column("message", Text, nullable=False),
        Index(f"ux_rm_job_logs{g}_pos_seq", "position", "seq", unique=True),
        Index(f"ix_rm_job_logs{g}_job", "job_id", "position", "seq"),
    )


def _revoked_sessions(md: MetaData, g: str) -> Table:
    return Table(
        f"rm_revoked_sessions{g}",
        md,
        Column("session", String(64), primary_key=True),
        Column("user_id", String(36), nullable=False),
        Column("revoked_at", DateTime(timezone=True), nullable=False),
    )


def _settings(md: MetaData, g: str) -> Table:
    return Table(
        f"rm_settings{g}",
        md,
        Column("id", String(36), primary_key=True),
        Column("key", String(100), nullable=False),
        Column("value", Json),
        Column("user_id", String(36), index=True),
        Column("deleted", Boolean, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column("position", BigInteger, nullable=False),
    )


def _agents(md: MetaData, g: str) -> Table:
    return Table(
        f"rm_agents{g}",
        md,
        Column("id", String(36), primary_key=True),
        Column("name", String(200), nullable=False),
        Column("description", Text, nullable=False),
        Column("type", String(40), nullable=False),
        Column("status", String(10), nullable=False),
        Column("configuration", Json, nullable=False),
        Column("provider_id", String(36)),
        Column("owner_id", String(36), nullable=False, index=True),
        Column("owner_username", String(150)),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column("position", BigInteger, nullable=False),
    )


def _providers(md: MetaData, g: str) -> Table:
    return Table(
        f"rm_providers{g}",
        md,
        Column("id", String(36), primary_key=True),
        Column("name", String(200), nullable=False),
        Column("kind", String(30), nullable=False),
        Column("base_url", Text),
        Column("has_api_key", Boolean, nullable=False),
        Column("enabled", Boolean, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column("position", BigInteger, nullable=False),
    )


def _dead_letters(md: MetaData, g: str) -> Table:
    return Table(
        f"rm_dead_letters{g}",
        md,
        Column("id", String(36), primary_key=True),
        Column("type", String(40), nullable=False),
        Column("code", String(40), nullable=False),
        Column("message", Text, nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("owner_id", String(36), nullable=False),
        Column("dead_lettered_at", DateTime(timezone=True), nullable=False, index=True),
        Column("position", BigInteger, nullable=False),
    )


def _webhook_endpoints(md: MetaData, g: str) -> Table:
    return Table(
        f"rm_webhook_endpoints{g}",
        md,
        Column("id", String(36), primary_key=True),
        Column("url", Text, nullable=False),
        Column("events", Json, nullable=False),
        Column("description", Text, nullable=False),
        Column("enabled", Boolean, nullable=False),
        Column("disabled_reason", Text),
        Column("owner_id", String(36), nullable=False, index=True),
        Column("created_at", DateTime(timezone=True), nullable=False, index=True),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column("position", BigInteger, nullable=False),
    )


_BUILDERS = {
    "users": _users,
    "projects": _projects,
    "jobs": _jobs,
    "job_results": _job_results,
    "job_logs": _job_logs,
    "revoked_sessions": _revoked_sessions,
    "settings": _settings,
    "agents": _agents,
    "providers": _providers,
    "dead_letters": _dead_letters,
    "webhook_endpoints": _webhook_endpoints,
}


def _build(md: MetaData, g: str) -> SimpleNamespace:
    """The read-model tables, named ``rm_<name><g>`` (``g`` is ``""`` for the views
    or ``_g<N>`` for generation N)."""
    return SimpleNamespace(**{name: build(md, g) for name, build in _BUILDERS.items()})


#: Names of the read-model tables of every generation (and of their views).
NAMES: tuple[str, ...] = (
    "dead_letters",
    "users",
    "projects",
    "jobs",
    "job_results",
    "job_logs",
    "revoked_sessions",
    "settings",
    "agents",
    "providers",
    "webhook_endpoints",
)


@cache
def generation(n: int) -> SimpleNamespace:
    """The physical tables of generation ``n`` (their own MetaData, so they can be
    created and dropped together)."""
    ns = _build(MetaData(), f"_g{n}")
    ns.metadata = next(iter(vars(ns).values())).metadata
    return ns


#: The views of stable names that readers query (they point at the serving generation).
_views = _build(MetaData(), "")
users = _views.users
projects = _views.projects
jobs = _views.jobs
job_results = _views.job_results
job_logs = _views.job_logs
revoked_sessions = _views.revoked_sessions
settings = _views.settings
agents = _views.agents
providers = _views.providers
dead_letters = _views.dead_letters
webhook_endpoints = _views.webhook_endpoints
