"""The ``aiorch`` command line (typer): run the whole system or one role, and admin tasks."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Annotated, Any

import typer

from infra.bootstrap import bootstrap
from infra.settings import load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="aiorch: event-sourced orchestration of AI media jobs.")
users_app = typer.Typer(no_args_is_help=True, help="Manage users (there is no signup).")
app.add_typer(users_app, name="users")

log = logging.getLogger("aiorch")


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(processName)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)


def _stop_on_signals(stop: Any) -> None:
    """Call ``stop()`` on SIGTERM and SIGINT (graceful shutdown)."""

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping", signum)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@app.command()
def up(
    host: Annotated[str, typer.Option(help="API address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    processors: Annotated[int, typer.Option(help="processor processes")] = 1,
    types: Annotated[str, typer.Option(help="job types the processors serve")] = "stt,tts",
) -> None:
    """Run every role (API, relay, projector, processors), each in its own supervised
    child process. Without AIORCH_DATABASE_URL / AIORCH_KAFKA_BOOTSTRAP_SERVERS it starts an
    embedded PostgreSQL and an embedded Kafka-compatible broker under AIORCH_DATA_DIR."""
    from infra.supervisor import run_system

    _logging()
    raise typer.Exit(run_system(load_settings(), host=host, port=port, processors=processors, types=types))


@app.command()
def api(host: Annotated[str, typer.Option()] = "127.0.0.1", port: Annotated[int, typer.Option()] = 8000) -> None:
    """Run the REST API alone."""
    import uvicorn

    from infra.roles import api_app, bootstrap_admin

    _logging()
    system = bootstrap(load_settings())
    bootstrap_admin(system)
    uvicorn.run(api_app(system), host=host, port=port, log_level="info", access_log=False)


@app.command()
def relay() -> None:
    """Run the outbox relay alone (store → Kafka)."""
    from infra.roles import relay as build_relay

    _logging()
    r = build_relay(bootstrap(load_settings()))
    _stop_on_signals(r.stop)
    r.run_forever()


@app.command()
def projector() -> None:
    """Run the read-model projector alone."""
    _logging()
    p = bootstrap(load_settings()).projector()
    _stop_on_signals(p.stop)
    p.run_forever()


@app.command()
def process(types: Annotated[str, typer.Option(help="comma-separated job types")] = "stt,tts") -> None:
    """Run one processor serving ``--types``."""
    from infra.roles import processor

    _logging()
    proc = processor(bootstrap(load_settings()), [t.strip() for t in types.split(",") if t.strip()])
    _stop_on_signals(proc.stop)
    proc.run_forever()


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
    system = bootstrap(load_settings())
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
    seed_demo(bootstrap(load_settings()), typer.echo)


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["main"]


if __name__ == "__main__":
    main()
