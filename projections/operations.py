"""Operator tasks on the read models: status (position, head, lag), blue/green rebuilds,
and the parked events (retry, skip)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, text

from projections import failures
from projections import tables as t
from projections.follow import NotificationSource
from projections.generations import (
    REGISTRY_NAME,
    create_generation,
    drop_generation,
    existing_generations,
    serving_generation,
    switch_views,
    tracking_name,
)
from projections.projector import Projector


def _event_time(source: NotificationSource, decode: Any, position: int) -> datetime | None:
    batch = source.select_notifications(position, 1, inclusive_of_start=False)
    return decode(batch[0]).timestamp if batch else None


def status(engine: Engine, source: NotificationSource, decode: Any) -> list[dict[str, Any]]:
    """``[{name, role, position, head, lag_events, lag_seconds}]`` for every generation of
    the read models and for the outbox relay. ``lag_seconds`` is the age of the oldest
    event not yet applied (0 when caught up)."""
    head = source.max_notification_id() or 0
    with engine.connect() as conn:
        serving = serving_generation(conn)
        generations = existing_generations(conn)
        positions = {r.name: r.position for r in conn.execute(select(t.tracking.c.name, t.tracking.c.position))}
        has_relay = conn.execute(text("SELECT to_regclass('relay_tracking') IS NOT NULL")).scalar()
        relay = conn.execute(text("SELECT name, position FROM relay_tracking")).all() if has_relay else []
    rows = [
        (tracking_name(g), "serving" if g == serving else "building", positions.get(tracking_name(g), 0)) for g in generations
    ]
    rows += [(name, "relay", position) for name, position in relay]
    now = datetime.now(UTC)
    out = []
    for name, role, position in rows:
        oldest = _event_time(source, decode, position) if position < head else None
        out.append(
            {
                "name": name,
                "role": role,
                "position": position,
                "head": head,
                "lag_events": max(head - position, 0),
                "lag_seconds": round((now - oldest).total_seconds(), 3) if oldest else 0.0,
            }
        )
    return out


def rebuild(
    engine: Engine,
    source: NotificationSource,
    decode: Any,
    *,
    batch_size: int = 2000,
    progress: Callable[[int, int, int], None] | None = None,
    keep_old: bool = False,
    grace_s: float = 1.0,
    create: Callable[[Engine, int], None] = create_generation,
) -> int:
    """Build the next generation of the read models beside the serving one while writes
    continue, switch reads to it in one transaction once it has caught up, then drop the
    old generation (unless ``keep_old``). Returns the new generation.

    ``progress(position, head, applied)`` is called after each batch (events committed in
    batches of ``batch_size``). An event that cannot be applied is parked for the new
    generation (``projection_failures``) and the rebuild goes on; one an operator skipped
    in the serving generation stays skipped. ``create(engine, generation)`` creates the new
    generation's tables (the deployment's schema step, e.g. ``infra.schema.ensure_generation``).
    """
    with engine.connect() as conn:
        serving = serving_generation(conn)
        new = max([*existing_generations(conn), serving or 0]) + 1
    create(engine, new)
    builder = Projector(engine, source, decode, generation=new, batch_size=batch_size)
    applied = 0
    while True:
        n = builder.run_once(new)
        applied += n
        head = source.max_notification_id() or 0
        position = builder.position()
        if progress:
            progress(position, head, applied)
        if n < batch_size and position >= head:
            break
    with engine.begin() as conn:
        switch_views(conn, new)
    # Keep the new generation moving until the live projector notices the switch.
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        builder.run_once(new)
        time.sleep(0.05)
    if serving is not None and not keep_old:
        drop_generation(engine, serving)
    return new


def generation_of(name: str) -> int | None:
    """The generation number of tracking name ``name`` (``read_models_g3`` → 3), or None
    for a follower that is not a read-model generation (the relay)."""
    prefix = f"{REGISTRY_NAME}_g"
    tail = name[len(prefix) :] if name.startswith(prefix) else ""
    return int(tail) if tail.isdigit() else None


def parked_at(engine: Engine | Connection, position: int, name: str | None = None) -> list[str]:
    """Names of the followers whose event at ``position`` is parked (only ``name`` if given)."""
    stmt = select(t.failures.c.name).where(t.failures.c.position == position, t.failures.c.state == failures.PARKED)
    if name:
        stmt = stmt.where(t.failures.c.name == name)
    if isinstance(engine, Connection):
        return sorted(engine.execute(stmt).scalars())
    with engine.connect() as conn:
        return sorted(conn.execute(stmt).scalars())


def retry(
    engine: Engine,
    source: NotificationSource,
    decode: Any,
    position: int,
    *,
    name: str | None = None,
    others: Mapping[str, Callable[[int], None]] | None = None,
) -> dict[str, str | None]:
    """Apply the parked event at ``position`` again now, for each follower that parked it
    (only ``name`` if given); each success is marked ``retried``, each failure keeps the
    event parked with its new error. Read-model generations are applied here; other
    followers (the relay) by ``others[name](position)``.

    Returns ``{name: None on success, else the error}`` ({} when nothing is parked there).
    """
    outcome: dict[str, str | None] = {}
    for follower in parked_at(engine, position, name):
        generation = generation_of(follower)
        try:
            if generation is not None:
                Projector(engine, source, decode, generation=generation).apply_one(generation, position)
            elif others and follower in others:
                others[follower](position)
            else:
                raise LookupError(f"no way to retry events of {follower} here")
        except Exception as exc:  # noqa: BLE001 - any failure keeps the event parked, reported
            outcome[follower] = failures.describe(exc)
            with engine.begin() as conn:
                failures.refresh_error(conn, follower, position, outcome[follower] or "")
            continue
        with engine.begin() as conn:
            failures.mark(conn, follower, position, failures.RETRIED)
        outcome[follower] = None
    return outcome


def skip(
    engine: Engine,
    position: int,
    reason: str,
    *,
    name: str | None = None,
    also: Callable[[Connection, list[str]], None] | None = None,
) -> list[str]:
    """Give up on the parked event at ``position`` (of ``name`` only, if given): mark it
    ``skipped`` with ``reason``, and call ``also(conn, names)`` in the same transaction when
    something was marked (the audit record). Returns the names marked ([] when nothing
    was parked there)."""
    with engine.begin() as conn:
        marked = [f for f in parked_at(conn, position, name) if failures.mark(conn, f, position, failures.SKIPPED, reason)]
        if marked and also is not None:
            also(conn, marked)
    return marked
