"""The schema step: every table of aiorch is created here, by :func:`ensure_schema`, under
one PostgreSQL advisory lock (``hashtext('aiorch-schema')``), so that roles started at the
same moment on a new database never race on DDL (two concurrent ``CREATE TABLE IF NOT
EXISTS`` of one table raise a unique violation, two concurrent ``GRANT`` or ``CREATE OR
REPLACE FUNCTION`` "tuple concurrently updated"). It runs before the roles start (``aiorch
up``'s supervisor, through :func:`infra.bootstrap.bootstrap`), again in each role when it is
run alone (a no-op once everything exists), and for a new read-model generation when a
rebuild begins (:func:`ensure_generation`). Constructors create nothing.

Least privilege: the roles (api, relay, projector, dispatcher, processors, CLI) connect as an
application role; the owner (``AIORCH_DATABASE_URL``) creates that role if absent, the event
store and the audit log, and triggers that refuse UPDATE, DELETE and TRUNCATE on both.
eventsourcing takes ``LOCK TABLE … IN EXCLUSIVE MODE`` on each append, which PostgreSQL
allows only with UPDATE, DELETE or TRUNCATE privilege (or ownership), so the application role
is granted SELECT, INSERT and UPDATE there and the owner's triggers refuse the UPDATE itself.

The other tables (:func:`app_tables`: read models, live tickets, throttling, refresh
rotations, webhook deliveries, leases, relay tracking, processor membership) are the
application role's own, created as that role. It may CREATE in the schema, because the
projector creates generation tables and switches views at rebuild time (blue/green), which
needs ownership of what it drops. It owns nothing it could use to change the record: it
cannot drop, alter, disable the triggers of or truncate a table it does not own.

Each table's *definition* stays with the module that owns it (``projections.tables``,
``api.tickets`` …); this module only lists the owners and creates their tables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql
from sqlalchemy import Engine, MetaData
from sqlalchemy.engine import make_url

from infra.db import app_role_name, conninfo, derived_password, make_engine, same_role, store_env

log = logging.getLogger(__name__)

#: the advisory lock every schema step holds (``pg_advisory_lock(hashtext(SCHEMA_LOCK))``)
SCHEMA_LOCK = "aiorch-schema"

#: the append-only tables: (table, its serial column)
PROTECTED = (("aiorch_events", "notification_id"), ("audit_log", "id"))

_FUNCTION = """
CREATE OR REPLACE FUNCTION aiorch_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
  RAISE EXCEPTION USING
    MESSAGE = TG_TABLE_NAME || ' is append-only: ' || TG_OP || ' refused', ERRCODE = 'insufficient_privilege';
END $$
"""


@dataclass(frozen=True)
class TableOwner:
    """A module that owns tables: ``create(engine)`` creates them if absent (idempotent,
    as ``engine``'s role); ``names`` are the tables and views it creates by name."""

    module: str
    create: Callable[[Engine], object]
    names: frozenset[str]

    @classmethod
    def of(cls, module: str, metadata: MetaData) -> TableOwner:
        """The owner of ``metadata``'s tables (created with ``metadata.create_all``)."""
        return cls(module, metadata.create_all, frozenset(table.name for table in metadata.tables.values()))


def app_tables() -> list[TableOwner]:
    """Every owner of the application role's tables, in creation order (imported here, so
    that importing this module imports none of them)."""
    from api import sessions, throttle, tickets
    from infra import invalid_messages, leases, membership, relay
    from projections import tables as t
    from projections import webhooks
    from projections.generations import ensure_serving

    read_models = frozenset(table.name for table in t.metadata.tables.values()) | {getattr(t, n).name for n in t.NAMES}
    return [
        # shared tables (tracking, registry, failures), generation 1 on a new database, its views
        TableOwner("projections.tables", ensure_serving, read_models),
        TableOwner.of("projections.webhooks", webhooks.metadata),
        TableOwner.of("api.tickets", tickets.metadata),
        TableOwner.of("api.throttle", throttle.metadata),
        TableOwner.of("api.sessions", sessions.metadata),
        TableOwner.of("infra.leases", leases.metadata),
        TableOwner.of("infra.relay", relay.metadata),
        TableOwner.of("infra.membership", membership.metadata),
        TableOwner.of("infra.invalid_messages", invalid_messages.metadata),
    ]


def generation_tables(generation: int) -> TableOwner:
    """The owner of read-model generation ``generation``'s tables (a rebuild's new one)."""
    from projections import tables as t
    from projections.generations import create_generation

    names = frozenset(table.name for table in t.generation(generation).metadata.tables.values())
    return TableOwner(f"projections.tables generation {generation}", lambda engine: create_generation(engine, generation), names)


def _role_exists(conn: psycopg.Connection[tuple[object, ...]], role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def ensure_app_role(conn: psycopg.Connection[tuple[object, ...]], role: str, password: str | None, *, derived: bool) -> None:
    """Create the application role ``role`` (LOGIN, no other attribute) if absent; keep a
    derived password in step with the owner's.

    Raises:
        RuntimeError: the owner may not create roles (then create it, or configure
            ``AIORCH_APP_DATABASE_URL`` with one that exists).
    """
    if _role_exists(conn, role):
        if derived and password:
            try:
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
            except psycopg.errors.InsufficientPrivilege:
                log.warning("cannot set the password of the application role %s; leaving it", role)
        return
    statement = sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION").format(sql.Identifier(role))
    if password:
        statement += sql.SQL(" PASSWORD {}").format(sql.Literal(password))
    try:
        conn.execute(statement)
    except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
        return  # another process of another database created it just now
    except psycopg.errors.InsufficientPrivilege as exc:
        raise RuntimeError(
            f"the database owner may not create the application role {role!r} ({exc}): create it "
            f"(CREATE ROLE {role} LOGIN PASSWORD '…') and set AIORCH_APP_DATABASE_URL"
        ) from exc
    log.info("created the application role %s", role)


def _has_trigger(conn: psycopg.Connection[tuple[object, ...]], table: str, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND tgname = %s", (table, name)).fetchone()
    return row is not None


def protect(conn: psycopg.Connection[tuple[object, ...]], table: str) -> None:
    """Owner triggers refusing UPDATE and DELETE (per row) and TRUNCATE (per statement)."""
    conn.execute(_FUNCTION)
    triggers = (("no_change", "UPDATE OR DELETE ON {} FOR EACH ROW"), ("no_truncate", "TRUNCATE ON {} FOR EACH STATEMENT"))
    for suffix, timing in triggers:
        name = f"{table}_{suffix}"
        if not _has_trigger(conn, table, name):
            conn.execute(
                sql.SQL("CREATE TRIGGER {} BEFORE " + timing + " EXECUTE FUNCTION aiorch_append_only()").format(
                    sql.Identifier(name), sql.Identifier(table)
                )
            )


def grant(conn: psycopg.Connection[tuple[object, ...]], role: str, database: str) -> None:
    """The application role's privileges: connect, use and create in the schema (its read
    models), SELECT, INSERT and UPDATE (for eventsourcing's lock) on the append-only
    tables and their sequences, nothing else on them."""
    ident = sql.Identifier(role)
    conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(sql.Identifier(database), ident))
    conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(ident))
    for table, column in PROTECTED:
        wrong = conn.execute(
            "SELECT NOT has_table_privilege(%(r)s, %(t)s, 'SELECT, INSERT') OR NOT has_table_privilege(%(r)s, %(t)s, 'UPDATE')"
            " OR has_table_privilege(%(r)s, %(t)s, 'DELETE, TRUNCATE, TRIGGER, REFERENCES')",
            {"r": role, "t": table},
        ).fetchone()
        if wrong and wrong[0]:
            conn.execute(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(sql.Identifier(table), ident))
            conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON TABLE {} TO {}").format(sql.Identifier(table), ident))
        row = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (table, column)).fetchone()
        if row and row[0]:
            conn.execute(sql.SQL("GRANT USAGE, SELECT ON SEQUENCE {} TO {}").format(sql.SQL(str(row[0])), ident))


def adopt(conn: psycopg.Connection[tuple[object, ...]], role: str) -> None:
    """Hand the read models an owner created before this step existed (earlier versions
    connected as the owner) to the application role, so that it can rebuild and drop them."""
    rows = conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v') AND pg_get_userbyid(c.relowner) = current_user"
    ).fetchall()
    known = {name for owner in app_tables() for name in owner.names}
    for name, kind in rows:
        name = str(name)
        if name in {p for p, _ in PROTECTED} or not (name in known or name.startswith("rm_")):
            continue
        what = "VIEW" if kind == "v" else "TABLE"
        try:
            conn.execute(sql.SQL("ALTER " + what + " {} OWNER TO {}").format(sql.Identifier(name), sql.Identifier(role)))
        except psycopg.errors.InsufficientPrivilege as exc:
            log.warning("cannot hand %s to the application role %s (%s): rebuilds may fail", name, role, exc)
            return


@contextmanager
def schema_lock(url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """Hold the schema step's advisory lock (:data:`SCHEMA_LOCK`) on a new autocommit
    connection to ``url`` (waiting for another holder); yields that connection. The lock
    goes with the connection if the process dies.

    Raises:
        psycopg.OperationalError: the database cannot be reached (5 s connect timeout).
    """
    with psycopg.connect(conninfo(url), autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (SCHEMA_LOCK,))
        try:
            yield conn
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (SCHEMA_LOCK,))


def _owner_step(conn: psycopg.Connection[tuple[object, ...]], owner_url: str, app_url: str) -> None:
    """As the owner (``conn``, of ``owner_url``): the application role of ``app_url`` if
    absent, the event store and the audit log with their append-only triggers, the grants,
    and the hand-over of read models an owner created (:func:`adopt`)."""
    from api.audit import create_audit_table
    from commands.service import Platform

    owner_role, app_role = make_url(owner_url).username or "postgres", make_url(app_url).username or "postgres"
    database = make_url(owner_url).database or "postgres"
    derived = app_role == app_role_name(owner_url) and make_url(app_url).password == derived_password(owner_url, app_role)
    separate = not same_role(owner_url, app_url)
    if separate:
        ensure_app_role(conn, app_role, make_url(app_url).password, derived=derived)
    else:
        log.warning("the roles connect as the database owner %s: the event store is not protected from them", owner_role)
    store = Platform(env=store_env(owner_url, pool_size=1))  # creates the event store as the owner
    store.close()
    engine = make_engine(owner_url, pool_size=1)
    try:
        create_audit_table(engine)
    finally:
        engine.dispose()
    for table, _ in PROTECTED:
        protect(conn, table)
    if separate:
        grant(conn, app_role, database)
        adopt(conn, app_role)


def ensure_schema(app_url: str, *, owner_url: str | None = None, owners: Sequence[TableOwner] | None = None) -> None:
    """The schema step (idempotent): under the advisory lock :data:`SCHEMA_LOCK`, held on a
    connection of the owner (``owner_url``) when given, else of the application role:

    1. with ``owner_url``, as the owner: the application role of ``app_url`` if absent, the
       event store and the audit log with their append-only triggers, the grants;
    2. as the application role (``app_url``): the tables of ``owners`` (default
       :func:`app_tables`, every one), each created if absent.

    Without ``owner_url`` (only ``AIORCH_APP_DATABASE_URL`` configured) the owner's part
    must have been done.

    Raises:
        RuntimeError: the owner may not create the application role.
        psycopg.OperationalError: the database cannot be reached.
    """
    with schema_lock(owner_url or app_url) as conn:
        if owner_url:
            _owner_step(conn, owner_url, app_url)
        engine = make_engine(app_url, pool_size=1)
        try:
            for owner in app_tables() if owners is None else owners:
                owner.create(engine)
        finally:
            engine.dispose()


def ensure_generation(engine: Engine, generation: int) -> None:
    """Read-model generation ``generation``'s tables, created by the schema step (as
    ``engine``'s role): what a rebuild runs when it begins (``create=`` of
    :func:`projections.operations.rebuild`)."""
    ensure_schema(engine.url.render_as_string(hide_password=False), owners=[generation_tables(generation)])
