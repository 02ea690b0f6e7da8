"""Read-model tables (SQLAlchemy 2 Core), created by the projector under versioned names.

Changing a read model means a new version (``_v2``) built beside the old one
(ARCHITECTURE.md, invariant 4): there are no read-model migrations.
"""

from __future__ import annotations

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
)
from sqlalchemy.dialects.postgresql import JSONB

VERSION = "v1"
metadata = MetaData()
Json = JSON().with_variant(JSONB(), "postgresql")

tracking = Table(
    "projection_tracking",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

users = Table(
    f"rm_users_{VERSION}",
    metadata,
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

projects = Table(
    f"rm_projects_{VERSION}",
    metadata,
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

jobs = Table(
    f"rm_jobs_{VERSION}",
    metadata,
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
    Column("version", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
    Index(f"ix_rm_jobs_{VERSION}_status_created", "status", "created_at"),
    Index(f"ix_rm_jobs_{VERSION}_created", "created_at"),
)

job_results = Table(
    f"rm_job_results_{VERSION}",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("job_id", String(36), nullable=False, unique=True),
    Column("owner_id", String(36), nullable=False, index=True),
    Column("files", Json, nullable=False),
    Column("meta", Json, nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False, index=True),
    Column("position", BigInteger, nullable=False),
)

job_logs = Table(
    f"rm_job_logs_{VERSION}",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("job_id", String(36), nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("level", String(10), nullable=False),
    Column("message", Text, nullable=False),
    Index(f"ux_rm_job_logs_{VERSION}_pos_seq", "position", "seq", unique=True),
    Index(f"ix_rm_job_logs_{VERSION}_job", "job_id", "position", "seq"),
)

revoked_sessions = Table(
    f"rm_revoked_sessions_{VERSION}",
    metadata,
    Column("session", String(64), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
)

settings = Table(
    f"rm_settings_{VERSION}",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("key", String(100), nullable=False),
    Column("value", Json),
    Column("user_id", String(36), index=True),
    Column("deleted", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("position", BigInteger, nullable=False),
)

agents = Table(
    f"rm_agents_{VERSION}",
    metadata,
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

providers = Table(
    f"rm_providers_{VERSION}",
    metadata,
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
