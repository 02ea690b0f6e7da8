"""Generations of the read models: which one serves, creating, switching and dropping.

The registry row ``projection_registry[read_models]`` names the serving generation; views
of stable names (``rm_jobs``) select from its tables. Switching rewrites every view and
the registry in one transaction, so readers see the old generation or the new one, never
a mix.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, inspect, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.schema import CreateColumn

from projections import tables as t

REGISTRY_NAME = "read_models"


def tracking_name(generation: int) -> str:
    """The tracking-record name of generation ``generation``."""
    return f"{REGISTRY_NAME}_g{generation}"


def serving_generation(conn: Connection) -> int | None:
    """The serving generation, or None before the first one."""
    value = conn.execute(select(t.registry.c.generation).where(t.registry.c.name == REGISTRY_NAME)).scalar()
    return int(value) if value is not None else None


def create_generation(engine: Engine, generation: int) -> None:
    """Create generation ``generation``'s tables (idempotent)."""
    t.metadata.create_all(engine)
    t.generation(generation).metadata.create_all(engine)


def switch_views(conn: Connection, generation: int) -> None:
    """Point every view at ``generation`` and record it as serving (caller's transaction)."""
    conn.execute(select(func.pg_advisory_xact_lock(func.hashtext("aiorch-read-model-views"))))
    for name in t.NAMES:
        view, table = getattr(t, name).name, getattr(t.generation(generation), name).name
        conn.execute(text(f'DROP VIEW IF EXISTS "{view}"'))
        conn.execute(text(f'CREATE VIEW "{view}" AS SELECT * FROM "{table}"'))
    stmt = pg_insert(t.registry).values(name=REGISTRY_NAME, generation=generation, switched_at=datetime.now(UTC))
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["name"], set_={"generation": generation, "switched_at": stmt.excluded.switched_at}
        )
    )


def upgrade_generation(conn: Connection, generation: int, declared: Any = None) -> list[str]:
    """Add to generation ``generation``'s tables the columns this version declares and they
    lack, then point the views at them again (``SELECT *`` views list their columns when
    created). Only columns every earlier event implies a value for are added: nullable ones
    and ones with a server default (e.g. ``rm_jobs.demo``, false for every job stored before
    the flag existed). Caller's transaction, under the views' advisory lock.

    ``declared`` is the generation's tables as this version declares them
    (``tables.generation(generation)``, the default).

    Returns ``["table.column", …]`` added (empty when nothing was missing).

    Raises:
        RuntimeError: a missing column has neither a default nor NULL; the read models must
            be rebuilt (``aiorch projections rebuild --all``).
    """
    declared = declared if declared is not None else t.generation(generation)
    inspector = inspect(conn)
    added: list[str] = []
    for name in t.NAMES:
        table = getattr(declared, name)
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable and column.server_default is None:
                raise RuntimeError(
                    f"read model {table.name} lacks column {column.name}, which earlier events give no value "
                    "for: run `aiorch projections rebuild --all`"
                )
            ddl = CreateColumn(column).compile(dialect=conn.dialect)
            conn.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN IF NOT EXISTS {ddl}'))
            added.append(f"{table.name}.{column.name}")
    if added:
        switch_views(conn, generation)
    return added


def ensure_serving(engine: Engine) -> int:
    """The serving generation, creating generation 1 with its views on a new database, and
    bringing an existing one's columns up to this version (:func:`upgrade_generation`)."""
    t.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext("aiorch-read-model-views"))))
        current = serving_generation(conn)
        if current is not None:
            upgrade_generation(conn, current)
            return current
    create_generation(engine, 1)
    with engine.begin() as conn:
        if serving_generation(conn) is None:
            switch_views(conn, 1)
        return serving_generation(conn) or 1


def existing_generations(conn: Connection) -> list[int]:
    """Generations whose tables exist (by their jobs table)."""
    rows = conn.execute(text("SELECT tablename FROM pg_tables WHERE tablename LIKE 'rm\\_jobs\\_g%'")).scalars()
    return sorted(int(name.rsplit("_g", 1)[1]) for name in rows if name.rsplit("_g", 1)[1].isdigit())


def drop_generation(engine: Engine, generation: int) -> None:
    """Drop generation ``generation``'s tables, tracking record and parked events. Refuses
    the serving one."""
    with engine.begin() as conn:
        if serving_generation(conn) == generation:
            raise ValueError(f"generation {generation} is serving")
        t.generation(generation).metadata.drop_all(conn)
        conn.execute(t.tracking.delete().where(t.tracking.c.name == tracking_name(generation)))
        conn.execute(t.failures.delete().where(t.failures.c.name == tracking_name(generation)))


def current_position(conn: Connection) -> int:
    """The serving generation's tracked position (0 before any event)."""
    stmt = select(t.tracking.c.position).join(
        t.registry, t.tracking.c.name == func.concat(t.registry.c.name, "_g", t.registry.c.generation)
    )
    return int(conn.execute(stmt.where(t.registry.c.name == REGISTRY_NAME)).scalar() or 0)
