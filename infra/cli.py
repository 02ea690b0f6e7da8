"""The ``aiorch`` command line (typer): run the whole system or one role, and admin tasks."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from infra.bootstrap import System
    from infra.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="aiorch: event-sourced orchestration of AI media jobs.")
users_app = typer.Typer(no_args_is_help=True, help="Manage users (there is no signup).")
app.add_typer(users_app, name="users")
projections_app = typer.Typer(
    no_args_is_help=True, help="Read-model operations: status, blue/green rebuilds, parked events (failures, retry, skip)."
)
app.add_typer(projections_app, name="projections")
jobs_app = typer.Typer(no_args_is_help=True, help="Inspect and act on jobs.")
app.add_typer(jobs_app, name="jobs")
letters_app = typer.Typer(no_args_is_help=True, help="Jobs that exhausted their attempts.")
app.add_typer(letters_app, name="dead-letters")
audit_app = typer.Typer(no_args_is_help=True, help="Check the read models against the event store.")
app.add_typer(audit_app, name="audit")
webhooks_app = typer.Typer(no_args_is_help=True, help="Webhook endpoints, their deliveries, redelivery.")
app.add_typer(webhooks_app, name="webhooks")
blobs_app = typer.Typer(no_args_is_help=True, help="Blob storage: move a local folder's files into a bucket.")
app.add_typer(blobs_app, name="blobs")

log = logging.getLogger("aiorch")


def _settings() -> Settings:
    """The settings (imported here: ``aiorch --help`` imports nothing heavy)."""
    from infra.settings import load_settings

    return load_settings()


def _system() -> System:
    """The composition root of the running system (raises what :func:`main` reports in one line)."""
    from infra.bootstrap import bootstrap

    return bootstrap(_settings())


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(processName)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _stop_on_signals(stop: Any) -> None:
    """Call ``stop()`` on SIGTERM and SIGINT (graceful shutdown)."""

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping", signum)
        # kafka-python's I/O thread can race the clients' close and log the socket it lost
        # with a traceback ("Error receiving network data"); a stopping role closes them on
        # purpose, so the library's network logs are quiet from here on
        logging.getLogger("kafka.net").setLevel(logging.CRITICAL)
        logging.getLogger("kafka.conn").setLevel(logging.CRITICAL)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@app.command()
def up(
    host: Annotated[str, typer.Option(help="API address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    processors: Annotated[int, typer.Option(help="processor processes")] = 1,
    types: Annotated[str, typer.Option(help="job types the processors serve (comma-separated, or all)")] = "all",
) -> None:
    """Run every role (API, relay, projector, dispatcher, processors), each in its own supervised
    child process. Without AIORCH_DATABASE_URL / AIORCH_KAFKA_BOOTSTRAP_SERVERS it starts an
    embedded PostgreSQL and an embedded Kafka-compatible broker under AIORCH_DATA_DIR."""
    from infra.supervisor import run_system

    _logging()
    raise typer.Exit(run_system(_settings(), host=host, port=port, processors=processors, types=types))


@app.command()
def api(host: Annotated[str, typer.Option()] = "127.0.0.1", port: Annotated[int, typer.Option()] = 8000) -> None:
    """Run the REST API alone."""
    import uvicorn

    from infra.roles import api_app, bootstrap_admin

    _logging()
    system = _system()
    bootstrap_admin(system)
    # proxy_headers off: the app believes X-Forwarded-* only from AIORCH_TRUSTED_PROXIES
    uvicorn.run(api_app(system), host=host, port=port, log_level="info", access_log=False, proxy_headers=False)


@app.command()
def relay() -> None:
    """Run the outbox relay alone (store → Kafka)."""
    from infra.roles import relay as build_relay

    _logging()
    system = _system()  # keep it: its store closes its pool when collected
    r = build_relay(system)
    _stop_on_signals(r.stop)
    try:
        r.run_forever()
    finally:
        system.close()


@app.command()
def projector() -> None:
    """Run the read-model projector alone."""
    _logging()
    system = _system()  # keep it: its store closes its pool when collected
    p = system.projector()
    _stop_on_signals(p.stop)
    try:
        p.run_forever()
    finally:
        system.close()


@app.command()
def dispatcher() -> None:
    """Run the webhook dispatcher alone (one active instance; others stand by)."""
    from infra.dispatcher import build_dispatcher

    _logging()
    system = _system()  # keep it: its store closes its pool when collected
    d = build_dispatcher(system)
    _stop_on_signals(d.stop)
    try:
        d.run_forever()
    finally:
        system.close()


@webhooks_app.command("list")
def webhooks_list() -> None:
    """Every endpoint: id, owner, enabled (or why disabled), events, URL."""
    from sqlalchemy import select

    from projections import tables as t

    system = _system()
    try:
        with system.engine.connect() as conn:
            rows = conn.execute(select(t.webhook_endpoints).order_by(t.webhook_endpoints.c.created_at)).mappings().all()
        for r in rows:
            state = "enabled" if r["enabled"] else f"disabled ({r['disabled_reason'] or 'by its owner'})"
            typer.echo(f"{r['id']}  owner={r['owner_id']}  {state}  events={','.join(r['events'])}  {r['url']}")
    finally:
        system.close()


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    endpoint: str, limit: Annotated[int, typer.Option(help="newest N")] = 50, status: Annotated[str | None, typer.Option()] = None
) -> None:
    """An endpoint's deliveries, newest first: id, event, position, status, attempts, last error."""
    from sqlalchemy import select

    from projections import webhooks as w

    system = _system()
    try:
        d = w.deliveries.c
        stmt = select(w.deliveries).where(d.endpoint_id == endpoint)
        if status:
            stmt = stmt.where(d.status == status)
        with system.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(d.created_at.desc()).limit(limit)).mappings().all()
        for r in rows:
            attempts = list(r["attempts"] or [])
            last = attempts[-1] if attempts else {}
            detail = last.get("error") or (f"HTTP {last['status_code']}" if last.get("status_code") else "")
            typer.echo(
                f"{r['id']}  {r['event_type']}  position={r['position']}  {r['status']}  attempts={len(attempts)}  {detail}"
            )
    finally:
        system.close()


@webhooks_app.command("redeliver")
def webhooks_redeliver(delivery: str) -> None:
    """Deliver one delivery again (recorded in the store as the system's request)."""
    import uuid
    from uuid import UUID

    from sqlalchemy import select

    from commands.context import SYSTEM, Context
    from commands.webhook_messages import RedeliverWebhook
    from projections import webhooks as w

    system = _system()
    try:
        with system.engine.connect() as conn:
            endpoint = conn.execute(select(w.deliveries.c.endpoint_id).where(w.deliveries.c.id == delivery)).scalar()
        if endpoint is None:
            typer.echo(f"no delivery {delivery} of an endpoint", err=True)
            raise typer.Exit(1)
        cmd = RedeliverWebhook(UUID(endpoint), delivery_id=UUID(delivery))
        position = system.platform.redeliver_webhook(cmd, Context(SYSTEM, f"cli-{uuid.uuid4()}"))
        typer.echo(f"redelivery of {delivery} requested at position {position}")
    finally:
        system.close()


@app.command()
def process(types: Annotated[str, typer.Option(help="comma-separated job types, or all")] = "all") -> None:
    """Run one processor serving ``--types``."""
    from infra.roles import processor

    _logging()
    from events.jobs import JOB_TYPES

    chosen = list(JOB_TYPES) if types.strip() == "all" else [t.strip() for t in types.split(",") if t.strip()]
    system = _system()  # keep it: its store closes its pool when collected
    proc = processor(system, chosen)
    _stop_on_signals(proc.stop)
    try:
        proc.run_forever()
    finally:
        system.close()


@users_app.command("create")
def users_create(
    name: str,
    role: Annotated[str, typer.Option(help="admin, editor or viewer")] = "editor",
    email: Annotated[str | None, typer.Option()] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from standard input")] = False,
) -> None:
    """Create a user. The password comes from standard input (--password-stdin) or a prompt."""
    from commands.errors import DomainError
    from infra.roles import create_user

    password = (
        sys.stdin.readline().rstrip("\n")
        if password_stdin
        else typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    )
    system = _system()
    try:
        user_id = create_user(system, name, password, role, email)
    except DomainError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"created {role} {name} ({user_id})")


@app.command()
def seed(demo: Annotated[bool, typer.Option("--demo", help="load the demo data set")] = False) -> None:
    """Load sample data into the running system (idempotent)."""
    from infra.seed import seed_demo

    if not demo:
        typer.echo("nothing to seed: pass --demo", err=True)
        raise typer.Exit(2)
    seed_demo(_system(), typer.echo)


@projections_app.command("status")
def projections_status() -> None:
    """Each projection (and the relay): position, head, lag in events and seconds."""
    from rich.console import Console
    from rich.table import Table

    from projections.operations import status

    system = _system()
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

    from projections.generations import REGISTRY_NAME
    from projections.operations import rebuild

    if not all_ and name not in (REGISTRY_NAME,):
        typer.echo(f"name a projection ({REGISTRY_NAME}) or pass --all", err=True)
        raise typer.Exit(2)
    system = _system()
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

    system = _system()
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

    system = _system()

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
    system = _system()

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


@jobs_app.command("history")
def jobs_history(job_id: str, as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False) -> None:
    """Every stored event of a job, in order, from the event store."""
    import json

    from api.routers.history import history_item

    system = _system()
    for position, event in system.platform.history(job_id, limit=1_000_000):
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
    import uuid

    from commands.context import SYSTEM, Context
    from commands.errors import DomainError
    from commands.messages import RetryJob

    system = _system()
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

    system = _system()
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

    system = _system()
    problems = verify(system, lambda n: typer.echo(f"checked {n} aggregates", err=True))
    for line in problems:
        typer.echo(line)
    if problems:
        raise typer.Exit(1)
    typer.echo("every read-model row matches the store")


@app.command()
def doctor(as_json: Annotated[bool, typer.Option("--json", help="the report as JSON")] = False) -> None:
    """What this machine lacks per job type: Debian packages, Python packages, models (no
    running system needed). Exits 0 when nothing is missing, 1 otherwise."""
    import json

    from infra.doctor import diagnose, render

    report = diagnose(_settings().resolved_model_dir)
    typer.echo(json.dumps(report, indent=2) if as_json else "\n".join(render(report)))
    raise typer.Exit(0 if report["complete"] else 1)


processors_app = typer.Typer(no_args_is_help=True, help="Processors that run jobs (their heartbeats).")
app.add_typer(processors_app, name="processors")


@processors_app.command("list")
def processors_list(
    as_json: Annotated[bool, typer.Option("--json", help="a JSON array")] = False,
    all_: Annotated[bool, typer.Option("--all", help="also processors whose heartbeat aged out (dead)")] = False,
) -> None:
    """Live processors (a heartbeat within three of their intervals): id, host, types,
    current job, last heartbeat."""
    import json

    from rich.console import Console
    from rich.table import Table

    from infra.bootstrap import bootstrap
    from infra.membership import ProcessorRoster

    system = bootstrap(_settings(), create_tables=False)
    try:
        members = ProcessorRoster(system.engine).members(include_dead=all_)
    finally:
        system.close()
    if as_json:
        typer.echo(json.dumps(members, indent=2))
        return
    table = Table("id", "host", "types", "current job", "last heartbeat", *(["state"] if all_ else []))
    for m in members:
        beat = f"{m['last_heartbeat_at']} ({m['heartbeat_age_s']:.1f} s ago)"
        state = ["live" if m["live"] else "dead"] if all_ else []
        table.add_row(m["id"], m["host"], ",".join(m["types"]), m["current_job"] or "-", beat, *state)
    Console(width=200).print(table)
    typer.echo(f"{sum(m['live'] for m in members)} live processor(s)", err=True)


@blobs_app.command("migrate")
def blobs_migrate(
    source: Annotated[
        str | None, typer.Option("--from", help="the local blob folder (default: AIORCH_BLOB_DIR or <data>/blobs)")
    ] = None,
    verify: Annotated[bool, typer.Option(help="read every copy back and compare its sha256")] = False,
) -> None:
    """Copy every blob of the local folder into the bucket of AIORCH_BLOB_URL (same keys),
    skipping those already there with the same size: safe to run again. Exit 1 if a copy
    differs (--verify)."""
    from pathlib import Path

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from infra.blobmigrate import migrate
    from infra.blobs import LocalBlobStore
    from infra.s3blobs import S3BlobStore, parse_blob_url

    settings = _settings()
    if not settings.blob_url:
        typer.echo("set AIORCH_BLOB_URL=s3://bucket/prefix (and AWS_*) to the bucket to copy into", err=True)
        raise typer.Exit(2)
    folder = Path(source) if source else settings.resolved_blob_dir
    if not folder.is_dir():
        typer.echo(f"no blob folder at {folder}", err=True)
        raise typer.Exit(2)
    local = LocalBlobStore(folder)
    target = S3BlobStore(*parse_blob_url(settings.blob_url))
    total = sum(local.sizes().values())
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(f"{folder} → {settings.blob_url}", total=total)
        report = migrate(local, target, verify=verify, progress=lambda _key, size: bar.advance(task, size))
    typer.echo(
        f"copied {len(report.copied)} blobs ({report.copied_bytes} bytes), "
        f"skipped {len(report.skipped)} already there" + (", verified every one" if verify and not report.mismatched else "")
    )
    for key in report.mismatched:
        typer.echo(f"differs: {key}", err=True)
    if report.mismatched:
        raise typer.Exit(1)


# -- the client: commands that act on a running aiorch through its public API ---------------


def _client(run: Any) -> None:
    """Run ``run()`` (a client action returning an exit code or None); a
    :class:`infra.client.ClientError` is one line on stderr and its exit code."""
    from infra.client import ClientError

    try:
        code = run()
    except ClientError as exc:
        typer.echo(f"aiorch: error: {exc}", err=True)
        raise typer.Exit(exc.code) from None
    if code:
        raise typer.Exit(code)


@app.command()
def login(
    url: Annotated[str, typer.Argument(help="the API's base URL, e.g. http://127.0.0.1:8000")],
    username: Annotated[str | None, typer.Option(help="asked when not given")] = None,
    password: Annotated[str | None, typer.Option(help="asked (hidden) when not given; or --password-stdin")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
) -> None:
    """Log in to a running aiorch: the tokens go to the user's config folder (mode 0600) and the
    client commands (submit, watch, jobs list) use them, refreshing them as they rotate."""
    from infra import client

    name = username or typer.prompt("username")
    secret = sys.stdin.readline().rstrip("\n") if password_stdin else password or typer.prompt("password", hide_input=True)

    def run() -> None:
        path = client.login(url, name, secret)
        typer.echo(f"logged in to {url.rstrip('/')} as {name} (tokens in {path})")

    _client(run)


@app.command()
def logout() -> None:
    """End the client's session on the server and forget its tokens."""
    from infra import client

    def run() -> None:
        session = client.Session()
        session.logout()
        typer.echo(f"logged out of {session.url}")

    _client(run)


@app.command()
def submit(
    job_type: Annotated[
        str,
        typer.Argument(
            metavar="TYPE", help="stt, tts, voice_cloning, dubbing, ai_stories, video_translation, animated_talking_heads"
        ),
    ],
    project: Annotated[str | None, typer.Option(help="project id (default: your project named cli, created if absent)")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="KEY=VALUE; a JSON literal value (42, true) is sent as JSON")
    ] = None,
    file: Annotated[list[str] | None, typer.Option("--file", "-f", help="FIELD=PATH, e.g. input_file=talk.wav")] = None,
    priority: Annotated[str | None, typer.Option(help="low, normal or high")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the job live and download its result files here")] = False,
    download: Annotated[bool, typer.Option(help="with --wait: download the result files")] = True,
) -> None:
    """Submit a job to the server you logged in to and print its id. With --wait, a progress bar
    (stage, percent, ETA) follows it live; exit 0 completed, 1 failed, 130 cancelled (Ctrl-C asks
    whether to cancel the job)."""
    from pathlib import Path

    from infra import client

    def run() -> int | None:
        params = client.parse_params(param or [])
        files = client.parse_files(file or [])
        session = client.Session()
        job_id = client.submit(session, job_type, project, params, files, priority)
        try:
            typer.echo(job_id)
            if wait:
                return client.follow(session, job_id, download, Path.cwd())
        except KeyboardInterrupt:  # before the progress bar took over
            return client.interrupted(session, job_id)
        return None

    _client(run)


@app.command()
def watch(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID")],
    download: Annotated[bool, typer.Option(help="download the result files here when it completes")] = True,
) -> None:
    """Follow a job live (stage, percent, ETA) until it is finished; exit 0 completed, 1 failed,
    130 cancelled (Ctrl-C asks whether to cancel the job)."""
    from pathlib import Path

    from infra import client

    _client(lambda: client.follow(client.Session(), job_id, download, Path.cwd()))


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option(help="pending, running, completed, failed or cancelled")] = None,
    job_type: Annotated[str | None, typer.Option("--type", help="a job type")] = None,
    project: Annotated[str | None, typer.Option(help="a project id")] = None,
    page_size: Annotated[int, typer.Option(help="how many (newest first)")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """The jobs you may see on the server you logged in to (`aiorch login`), newest first, as a table."""
    from infra import client

    filters = {"status": status, "type": job_type, "project": project, "page_size": page_size}
    _client(lambda: client.list_jobs(client.Session(), filters, as_json))


def _unreachable(exc: BaseException) -> str | None:
    """A one-line reason when ``exc`` means the system cannot be found or reached, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        name = type(seen).__name__
        if isinstance(seen, RuntimeError) and str(seen).startswith("no database"):
            return str(seen)
        if name in ("OperationalError", "InterfaceError") or isinstance(seen, ConnectionError):
            first = (str(seen).strip().splitlines() or [name])[0]
            return f"cannot reach the database ({first[:200]}); is `aiorch up` running, and AIORCH_DATA_DIR the one it uses?"
        seen = seen.__cause__ or seen.__context__
    return None


def main() -> None:
    """Console-script entry point: errors that mean "the system is not there" are one line.
    Files the roles create (secrets, runtime.json, blobs, logs) are this user's alone: umask 077."""
    os.umask(0o077)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        reason = _unreachable(exc)
        if reason is None:
            raise
        typer.echo(f"aiorch: error: {reason}", err=True)
        sys.exit(1)


__all__ = ["main"]


if __name__ == "__main__":
    main()
