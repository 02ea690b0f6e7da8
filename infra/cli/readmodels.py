"""``aiorch projections``: status, blue/green rebuilds, and the parked events (failures,
retry, skip)."""

from __future__ import annotations

from typing import Annotated

import typer

from infra.cli import base
from infra.cli.base import projections_app


@projections_app.command("status")
def projections_status() -> None:
    """Each projection (and the relay): position, head, lag in events and seconds."""
    from rich.console import Console
    from rich.table import Table

    from projections.operations import status

    system = base.system()
    table = Table("projection", "role", "position", "head", "lag (events)", "lag (s)")
    for row in status(system.engine, system.platform.recorder, system.platform.mapper.to_domain_event):
        table.add_row(
            row["name"], row["role"], str(row["position"]), str(row["head"]), str(row["lag_events"]), f"{row['lag_seconds']:.3f}"
        )
    Console().print(table)


@projections_app.command("rebuild")
def projections_rebuild(
    name: Annotated[str | None, typer.Argument(help="read_models (the only projection)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="rebuild every projection")] = False,
    batch_size: Annotated[int, typer.Option(help="events per transaction")] = 2000,
) -> None:
    """Build the next generation beside the serving one while writes continue, switch reads
    to it atomically once caught up, and drop the old one."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from infra.schema import ensure_generation
    from projections.generations import REGISTRY_NAME
    from projections.operations import rebuild

    if not all_ and name not in (REGISTRY_NAME,):
        typer.echo(f"name a projection ({REGISTRY_NAME}) or pass --all", err=True)
        raise typer.Exit(2)
    system = base.system()
    started = time.monotonic()
    with Progress(
        TextColumn("[bold]read_models"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} events"),
        TextColumn("{task.fields[rate]:,.0f} events/s"),
        TimeElapsedColumn(),
    ) as bar:
        task = bar.add_task("rebuild", total=system.platform.head() or 1, rate=0.0)

        def progress(position: int, head: int, applied: int) -> None:
            bar.update(task, completed=position, total=max(head, 1), rate=applied / max(time.monotonic() - started, 1e-6))

        generation = rebuild(
            system.engine,
            system.platform.recorder,
            system.platform.mapper.to_domain_event,
            batch_size=batch_size,
            progress=progress,
            create=ensure_generation,  # the new generation's tables: by the schema step, under its lock
        )
    typer.echo(f"read models rebuilt as generation {generation} and switched; the old generation was dropped")


@projections_app.command("failures")
def projections_failures(
    state: Annotated[str | None, typer.Option(help="parked, retried or skipped (default: all)")] = None,
) -> None:
    """Events a projection or the relay could not apply: position, follower, topic, state,
    when, and the error (or the reason it was skipped)."""
    from rich.console import Console
    from rich.table import Table

    from projections.failures import failures

    system = base.system()
    with system.engine.connect() as conn:
        rows = failures(conn, state)
    table = Table("position", "projection", "topic", "state", "at", "error / reason")
    for r in rows:
        detail = r["error"] if r["state"] != "skipped" else f"skipped: {r['reason']} ({r['error']})"
        table.add_row(str(r["position"]), r["name"], r["topic"], r["state"], f"{r['at']:%Y-%m-%d %H:%M:%S}", detail[:200])
    Console(width=200).print(table)
    typer.echo(f"{sum(r['state'] == 'parked' for r in rows)} parked, {len(rows)} recorded", err=True)


@projections_app.command("retry")
def projections_retry(
    position: int,
    name: Annotated[str | None, typer.Option(help="only this projection (e.g. read_models_g2, relay)")] = None,
) -> None:
    """Apply a parked event again now; marked retried when it applies (exit 1 if it still fails)."""
    from projections.failures import RELAY
    from projections.operations import retry

    system = base.system()

    def relay_retry(pos: int) -> None:
        from infra.roles import relay

        r = relay(system)
        try:
            r.publish_one(pos)
        finally:
            r.close()

    outcome = retry(
        system.engine,
        system.platform.recorder,
        system.platform.mapper.to_domain_event,
        position,
        name=name,
        others={RELAY: relay_retry},
    )
    if not outcome:
        typer.echo(f"error: no event is parked at position {position}", err=True)
        raise typer.Exit(1)
    for follower, error in outcome.items():
        typer.echo(
            f"{follower}: position {position} " + ("applied; marked retried" if error is None else f"still fails: {error}")
        )
    if any(error is not None for error in outcome.values()):
        raise typer.Exit(1)


@projections_app.command("skip")
def projections_skip(
    position: int,
    reason: Annotated[str, typer.Option(help="why the event is given up (kept with it and in the audit log)")],
    name: Annotated[str | None, typer.Option(help="only this projection (e.g. read_models_g2, relay)")] = None,
) -> None:
    """Give up on a parked event: mark it skipped with a reason (recorded in the audit log)."""
    import uuid
    from datetime import UTC, datetime

    from sqlalchemy import Connection, insert

    from api.audit import audit_log
    from commands.context import SYSTEM
    from projections.operations import skip

    if not reason.strip():
        typer.echo("error: give a --reason", err=True)
        raise typer.Exit(2)
    system = base.system()

    def audit(conn: Connection, marked: list[str]) -> None:
        conn.execute(
            insert(audit_log).values(
                at=datetime.now(UTC),
                actor_id=SYSTEM.id,
                actor_username=SYSTEM.username,
                command="SkipProjectionFailure",
                target=f"{position} {','.join(marked)}"[:300],
                outcome="ok",
                status=200,
                request_id=f"cli-{uuid.uuid4()}",
            )
        )

    marked = skip(system.engine, position, reason, name=name, also=audit)
    if not marked:
        typer.echo(f"error: no event is parked at position {position}", err=True)
        raise typer.Exit(1)
    typer.echo(f"position {position} skipped for {', '.join(marked)}")
