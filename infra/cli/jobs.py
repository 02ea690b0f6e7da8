"""``aiorch jobs history|retry``, ``aiorch dead-letters`` and ``aiorch audit verify``: what
an operator does on the store directly (``jobs list`` is the client's, :mod:`infra.cli.remote`)."""

from __future__ import annotations

from typing import Annotated

import typer

from infra.cli import base
from infra.cli.base import audit_app, jobs_app, letters_app


@jobs_app.command("history")
def jobs_history(job_id: str, as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False) -> None:
    """Every stored event of a job, in order, from the event store."""
    import json

    from api.history_items import history_item
    from projections.history import StoreHistory

    system = base.system()
    for position, event in StoreHistory.of_store(system.engine, system.platform.recorder, system.platform.mapper).walk(job_id):
        item = history_item(position, event)
        if as_json:
            typer.echo(json.dumps(item))
        else:
            actor = item["actor"].get("username") or item["actor"].get("id")
            typer.echo(
                f"{item['position']:>8}  v{item['version']:<4} {item['occurred_at']}  {item['type']:<20} by {actor}  "
                f"{json.dumps(item['data'])[:120]}"
            )


def _retry(job_id: str, reason: str) -> None:
    """Send ``job_id`` back to pending (``reason`` recorded); a refusal is one line, exit 1."""
    import uuid

    from commands.context import SYSTEM, Context
    from commands.errors import DomainError
    from commands.messages import RetryJob

    system = base.system()
    try:
        position = system.platform.retry_job(RetryJob(uuid.UUID(job_id), reason), Context(SYSTEM, f"cli-{uuid.uuid4()}"))
    except (DomainError, ValueError) as exc:
        typer.echo(f"error: {getattr(exc, 'detail', exc)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"job {job_id} is pending again (position {position})")


@jobs_app.command("retry")
def jobs_retry(job_id: str) -> None:
    """Send a failed or cancelled job back to pending as its next attempt."""
    _retry(job_id, "retried by an operator")


@letters_app.command("list")
def dead_letters_list() -> None:
    """Jobs that exhausted their attempts, newest first."""
    from sqlalchemy import select

    from projections import tables as t

    system = base.system()
    with system.engine.connect() as conn:
        rows = conn.execute(select(t.dead_letters).order_by(t.dead_letters.c.dead_lettered_at.desc())).mappings().all()
    for r in rows:
        typer.echo(
            f"{r['id']}  {r['type']:<12} {r['attempts']} attempts  {r['dead_lettered_at']:%Y-%m-%d %H:%M:%S}  "
            f"{r['code']}: {r['message'][:80]}"
        )
    typer.echo(f"{len(rows)} dead letter(s)", err=True)


@letters_app.command("redrive")
def dead_letters_redrive(letter_id: str) -> None:
    """Send a dead-lettered job back to pending as its next attempt."""
    _retry(letter_id, "re-driven from the dead letters")


@audit_app.command("verify")
def audit_verify() -> None:
    """Re-fold every job, project and user from the store and report each read-model row
    that differs (exit 1 if any)."""
    from infra.verify import verify

    system = base.system()
    problems = verify(system, lambda n: typer.echo(f"checked {n} aggregates", err=True))
    for line in problems:
        typer.echo(line)
    if problems:
        raise typer.Exit(1)
    typer.echo("every read-model row matches the store")
