"""Database URLs: one ``AIORCH_DATABASE_URL`` becomes the event store's eventsourcing
environment, a psycopg connection string and a SQLAlchemy engine; and the application
role the roles connect as (the owner's URL only sets the schema up, :mod:`infra.schema`)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url


def _url(database_url: str) -> URL:
    url = make_url(database_url)
    return url.set(drivername="postgresql+psycopg")


def store_env(
    database_url: str, *, pool_size: int = 10, connect_timeout: int = 5, create_table: bool = True, group_commit: bool = True
) -> dict[str, str]:
    """eventsourcing's environment for a PostgreSQL event store at ``database_url``.

    Accepts ``postgresql://user:pw@host:port/db`` and unix sockets as ``?host=/dir``.
    ``create_table=False`` for the application role: the owner creates the store.

    The pool (psycopg_pool) keeps one connection open and grows on demand to
    ``2 × pool_size``; connections beyond the first close after 10 idle minutes. (It used
    to open ``pool_size`` connections at start: ten per role held by an idle system.)

    ``group_commit`` (default) appends concurrent commands' events in shared transactions
    (infra/groupcommit.py); ``False`` keeps eventsourcing's one transaction per append.
    """
    url = _url(database_url)
    host = url.query.get("host") or url.host or "127.0.0.1"
    if isinstance(host, tuple):
        host = host[0]
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.database or "postgres",
        "POSTGRES_HOST": str(host),
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "",
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": str(max(2 * pool_size - 1, 0)),
        "POSTGRES_CONNECT_TIMEOUT": str(connect_timeout),
        "POSTGRES_LOCK_TIMEOUT": "5",
        "POSTGRES_PRE_PING": "y",
        "CREATE_TABLE": "y" if create_table else "n",
    }
    if group_commit:
        env["APPLICATION_RECORDER_TOPIC"] = "infra.groupcommit:GroupCommitRecorder"
    return env


def conninfo(database_url: str) -> str:
    """A libpq connection string (for psycopg) of ``database_url``."""
    env = store_env(database_url)
    parts = {
        "dbname": env["POSTGRES_DBNAME"],
        "host": env["POSTGRES_HOST"],
        "port": env["POSTGRES_PORT"],
        "user": env["POSTGRES_USER"],
    }
    if env["POSTGRES_PASSWORD"]:
        parts["password"] = env["POSTGRES_PASSWORD"]
    return " ".join(f"{k}='{v}'" for k, v in parts.items())


def make_engine(database_url: str, *, pool_size: int = 10, **kwargs: Any) -> Engine:
    """A SQLAlchemy engine (psycopg 3 driver) on ``database_url`` with pre-ping and a
    5 s connect timeout, so that an outage answers quickly instead of hanging.

    Connections open on first use; up to ``pool_size`` are kept, ``pool_size`` more may
    open under load (closed when returned)."""
    return create_engine(
        _url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=5,
        connect_args={"connect_timeout": 5},
        **kwargs,
    )


# -- least privilege: the owner sets the schema up, the roles connect as an application role


def app_role_name(database_url: str) -> str:
    """The derived application role of the database at ``database_url``: ``<dbname>_app``
    (cut to PostgreSQL's 63-character identifiers). Per database, so that deployments sharing
    a cluster never share a role."""
    return f"{_url(database_url).database or 'postgres'}_app"[:63]


def derived_password(owner_url: str, role: str) -> str | None:
    """The derived application role's password: HMAC-SHA256 of the role name keyed with the
    owner's password (hex), so every process given the owner's URL derives the same one.
    None when the owner has no password (trust or peer authentication): the role then gets
    no password either, rather than one anybody could derive."""
    password = _url(owner_url).password
    if not password:
        return None
    return hmac.new(str(password).encode(), f"aiorch-app-role:{role}".encode(), hashlib.sha256).hexdigest()


def app_database_url(owner_url: str, configured: str | None = None) -> str:
    """The URL the roles connect with: ``configured`` (``AIORCH_APP_DATABASE_URL``), else the
    owner's URL with the derived role (:func:`app_role_name`, :func:`derived_password`)."""
    if configured:
        return configured
    role = app_role_name(owner_url)
    url = _url(owner_url).set(username=role, password=derived_password(owner_url, role))
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def same_role(a: str, b: str) -> bool:
    """Whether two URLs connect as the same role."""
    return (_url(a).username or "postgres") == (_url(b).username or "postgres")
