"""Admin commands: ``users create``, ``seed``, ``doctor``, ``processors list`` and
``blobs migrate`` (``seed`` and ``doctor`` are registered on the root app by :mod:`infra.cli`)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from infra.cli import base
from infra.cli.base import blobs_app, processors_app, users_app


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
    system = base.system()
    try:
        user_id = create_user(system, name, password, role, email)
    except DomainError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"created {role} {name} ({user_id})")


def seed(demo: Annotated[bool, typer.Option("--demo", help="load the demo data set")] = False) -> None:
    """Load sample data into the running system (idempotent)."""
    from infra.seed import seed_demo

    if not demo:
        typer.echo("nothing to seed: pass --demo", err=True)
        raise typer.Exit(2)
    seed_demo(base.system(), typer.echo)


def doctor(as_json: Annotated[bool, typer.Option("--json", help="the report as JSON")] = False) -> None:
    """What this machine lacks per job type: Debian packages, Python packages, models (no
    running system needed). Exits 0 when nothing is missing, 1 otherwise."""
    import json

    from infra.doctor import diagnose, render

    report = diagnose(base.settings().resolved_model_dir)
    typer.echo(json.dumps(report, indent=2) if as_json else "\n".join(render(report)))
    raise typer.Exit(0 if report["complete"] else 1)


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

    system = bootstrap(base.settings(), create_tables=False)
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

    settings = base.settings()
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
