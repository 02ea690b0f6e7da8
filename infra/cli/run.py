"""``aiorch up`` and the commands that run one role alone (api, relay, projector,
dispatcher, process), registered on the root app by :mod:`infra.cli`. Each role runs the schema
step first (:func:`infra.cli.base.system`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Protocol

import typer

from infra.cli import base

if TYPE_CHECKING:
    from infra.bootstrap import System


def up(
    host: Annotated[str, typer.Option(help="API address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    processors: Annotated[int, typer.Option(help="processor processes")] = 1,
    types: Annotated[str, typer.Option(help="job types the processors serve (comma-separated, or all)")] = "all",
    api_workers: Annotated[int, typer.Option(help="API worker processes (default: the core count)")] = 0,
) -> None:
    """Run every role (API, relay, projector, dispatcher, processors), each in its own supervised
    child process. Without AIORCH_DATABASE_URL / AIORCH_KAFKA_BOOTSTRAP_SERVERS it starts an
    embedded PostgreSQL and an embedded Kafka-compatible broker under AIORCH_DATA_DIR."""
    from infra.supervisor import run_system

    base.setup_logging()
    from infra.apiserver import default_workers

    workers = api_workers or default_workers()
    raise typer.Exit(run_system(base.settings(), host=host, port=port, processors=processors, types=types, api_workers=workers))


def api(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option(help="worker processes sharing the port")] = 1,
) -> None:
    """Run the REST API alone."""
    from infra.apiserver import serve

    base.setup_logging()
    serve(host, port, workers)


class _Role(Protocol):
    """A role that runs until stopped: the relay, the projector, the dispatcher, a processor."""

    def run_forever(self) -> None: ...

    def stop(self) -> None: ...


def _run_alone(build: Callable[[System], _Role]) -> None:
    """Run ``build(system)``'s role alone on the running system (its schema step run) until
    SIGTERM or SIGINT stops it, then close the system."""
    base.setup_logging()
    system = base.system()  # keep it: its store closes its pool when collected
    role = build(system)
    base.stop_on_signals(role.stop)
    try:
        role.run_forever()
    finally:
        system.close()


def relay() -> None:
    """Run the outbox relay alone (store → Kafka)."""
    from infra.roles import relay as build_relay

    _run_alone(build_relay)


def projector() -> None:
    """Run the read-model projector alone."""
    _run_alone(lambda system: system.projector())


def dispatcher() -> None:
    """Run the webhook dispatcher alone (one active instance; others stand by)."""
    from infra.dispatcher import build_dispatcher

    _run_alone(build_dispatcher)


def process(types: Annotated[str, typer.Option(help="comma-separated job types, or all")] = "all") -> None:
    """Run one processor serving ``--types``."""
    from events.jobs import JOB_TYPES
    from infra.roles import processor

    chosen = list(JOB_TYPES) if types.strip() == "all" else [t.strip() for t in types.split(",") if t.strip()]
    _run_alone(lambda system: processor(system, chosen))
