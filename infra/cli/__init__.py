"""The ``aiorch`` command line (typer): run the whole system or one role, and admin tasks.

One module per command group; a group's commands register on its sub-app of
:mod:`infra.cli.base` when imported, the top-level ones are registered below, in the order
``aiorch --help`` lists them:

- :mod:`infra.cli.run`: ``up`` and the roles run alone (api, relay, projector, dispatcher, process)
- :mod:`infra.cli.webhooks`: ``webhooks list|deliveries|redeliver``
- :mod:`infra.cli.admin`: ``users create``, ``seed``, ``doctor``, ``processors list``, ``blobs migrate``
- :mod:`infra.cli.readmodels`: ``projections status|rebuild|failures|retry|skip``
- :mod:`infra.cli.jobs`: ``jobs history|retry``, ``dead-letters``, ``audit verify``
- :mod:`infra.cli.remote`: the client (``login``, ``logout``, ``submit``, ``watch``, ``jobs list``)

The console script ``aiorch`` is :func:`main`; ``python -m infra.cli`` runs it too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import typer

from infra.cli import admin, jobs, readmodels, remote, run, webhooks
from infra.cli.base import app

_GROUPS = (webhooks, readmodels, jobs)  # imported for the commands they register on their sub-apps
_TOP_LEVEL: tuple[Callable[..., None], ...] = (run.up, run.api, run.relay, run.projector, run.dispatcher, run.process)
_TOP_LEVEL += (admin.seed, admin.doctor, remote.login, remote.logout, remote.submit, remote.watch)
for _command in _TOP_LEVEL:
    app.command()(_command)


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


__all__ = ["app", "main"]
