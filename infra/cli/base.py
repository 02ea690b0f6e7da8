"""What every command group of the ``aiorch`` command line shares: the root typer app and
its sub-apps (created here, in the order ``aiorch --help`` lists them), the settings, the
composition root, logging and graceful stop.

Nothing heavy is imported at module level: ``aiorch --help`` and the admin commands must
not import an engine (tests/e2e/test_newcomer.py).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
processors_app = typer.Typer(no_args_is_help=True, help="Processors that run jobs (their heartbeats).")
app.add_typer(processors_app, name="processors")

log = logging.getLogger("aiorch")


def settings() -> Settings:
    """The settings (imported here: ``aiorch --help`` imports nothing heavy)."""
    from infra.settings import load_settings

    return load_settings()


def system() -> System:
    """The composition root of the running system, its schema step run (raises what
    :func:`infra.cli.main` reports in one line)."""
    from infra.bootstrap import bootstrap

    return bootstrap(settings())


def setup_logging(level: str = "INFO") -> None:
    """Log lines with time, level, logger and process; the chatty libraries at WARNING."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(processName)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def stop_on_signals(stop: Callable[[], Any]) -> None:
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
