"""Operator tasks on the read models: status (position, head, lag) and blue/green rebuilds."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select, text

from projections import tables as t
from projections.follow import NotificationSource
from projections.generations import (
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
) -> int:
    """Build the next generation of the read models beside the serving one while writes
    continue, switch reads to it in one transaction once it has caught up, then drop the
    old generation (unless ``keep_old``). Returns the new generation.

    ``progress(position, head, applied)`` is called after each batch (events committed in
    batches of ``batch_size``).
    """
    with engine.connect() as conn:
        serving = serving_generation(conn)
        new = max([*existing_generations(conn), serving or 0]) + 1
    create_generation(engine, new)
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
