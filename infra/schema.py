"""The schema step, run by the database owner before the roles connect (least privilege).

The roles (api, relay, projector, dispatcher, processors, CLI) connect as an application role; the owner
(``AIORCH_DATABASE_URL``) creates that role if absent, the event store and the audit log,
and triggers that refuse UPDATE, DELETE and TRUNCATE on both. eventsourcing takes
``LOCK TABLE … IN EXCLUSIVE MODE`` on each append, which PostgreSQL allows only with UPDATE,
DELETE or TRUNCATE privilege (or ownership), so the application role is granted SELECT,
INSERT and UPDATE there and the owner's triggers refuse the UPDATE itself.

Read models stay the application role's own: it may CREATE in the schema, because the
projector creates generation tables and switches views at rebuild time (blue/green), which
needs ownership of what it drops. It owns nothing it could use to change the record: it
cannot drop, alter, disable the triggers of or truncate a table it does not own.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from infra.db import app_role_name, conninfo, derived_password, make_engine, same_role, store_env

log = logging.getLogger(__name__)

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


def _known_read_models() -> set[str]:
    from api import live
    from infra import leases, relay
    from projections import tables as t
    from projections import webhooks

    metadatas = (t.metadata, live.metadata, leases.metadata, relay.metadata, webhooks.metadata)
    names = {table.name for md in metadatas for table in md.tables.values()}
    return names | {getattr(t, name).name for name in t.NAMES}


def adopt(conn: psycopg.Connection[tuple[object, ...]], role: str) -> None:
    """Hand the read models an owner created before this step existed (earlier versions
    connected as the owner) to the application role, so that it can rebuild and drop them."""
    rows = conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v') AND pg_get_userbyid(c.relowner) = current_user"
    ).fetchall()
    known = _known_read_models()
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


def prepare_database(owner_url: str, app_url: str) -> None:
    """The schema step: as the owner of ``owner_url``, create the application role of
    ``app_url`` if absent, the event store and the audit log with their append-only
    triggers, and the grants. Idempotent; concurrent callers serialise on an advisory lock.

    Raises:
        RuntimeError: the owner may not create the application role.
        psycopg.OperationalError: the database cannot be reached.
    """
    from api.audit import create_audit_table
    from commands.service import Platform

    owner_role, app_role = make_url(owner_url).username or "postgres", make_url(app_url).username or "postgres"
    database = make_url(owner_url).database or "postgres"
    derived = app_role == app_role_name(owner_url) and make_url(app_url).password == derived_password(owner_url, app_role)
    with psycopg.connect(conninfo(owner_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('aiorch-schema'))")
        try:
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
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('aiorch-schema'))")
