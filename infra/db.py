"""Database URLs: one ``AIORCH_DATABASE_URL`` becomes the event store's eventsourcing
environment, a psycopg connection string and a SQLAlchemy engine."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url


def _url(database_url: str) -> URL:
    url = make_url(database_url)
    return url.set(drivername="postgresql+psycopg")


def store_env(database_url: str, *, pool_size: int = 10, connect_timeout: int = 5) -> dict[str, str]:
    """eventsourcing's environment for a PostgreSQL event store at ``database_url``.

    Accepts ``postgresql://user:pw@host:port/db`` and unix sockets as ``?host=/dir``.
    """
    url = _url(database_url)
    host = url.query.get("host") or url.host or "127.0.0.1"
    if isinstance(host, tuple):
        host = host[0]
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.database or "postgres",
        "POSTGRES_HOST": str(host),
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "",
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pool_size),
        "POSTGRES_CONNECT_TIMEOUT": str(connect_timeout),
        "POSTGRES_LOCK_TIMEOUT": "5",
        "POSTGRES_PRE_PING": "y",
        "CREATE_TABLE": "y",
    }


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
    5 s connect timeout, so that an outage answers quickly instead of hanging."""
    return create_engine(
        _url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=5,
        connect_args={"connect_timeout": 5},
        **kwargs,
    )
