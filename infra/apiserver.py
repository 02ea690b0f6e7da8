"""Serving the REST API with uvicorn: one process, or several worker processes on one port.

With ``workers > 1`` uvicorn's own multiprocess supervisor binds the socket once and hands it
to ``workers`` spawned processes; each builds its own :class:`~infra.bootstrap.System` from the
environment's settings (:func:`app_factory`), restarts a worker that dies, and on SIGTERM stops
them gracefully. The API keeps nothing a later request needs in one process's memory: users,
sessions, login throttles, SSE tickets, idempotency keys and the event store are in
PostgreSQL; each worker has its own read-your-writes listener (``api.readwait``, woken by the
projector's NOTIFY, which reaches every listener) and its own live hub. What stays per process:
the Prometheus counters of ``/metrics`` (a scrape sees the worker that answered it), the live
feed's ``max_live_per_user`` and the concurrent password checks (``max_password_checks``).

uvicorn's server loop wakes every 0.1 s (``uvicorn.Server.main_loop``: it refreshes the
``Date`` header once a second and looks for a shutdown); an API process here ticks once a
second instead (:func:`quiet_server_loop`), ten times fewer wake-ups of an idle worker. A
SIGTERM is then noticed at the next tick, at most a second later.
"""

from __future__ import annotations

import asyncio
import logging
import os

import uvicorn
from fastapi import FastAPI

#: the factory uvicorn's worker processes import (``module:function``)
FACTORY = "infra.apiserver:app_factory"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(processName)s: %(message)s"


#: seconds between ticks of an API process's uvicorn server loop (uvicorn's own: 0.1 s)
TICK_S = 1.0


async def _main_loop(self: uvicorn.Server) -> None:
    """``uvicorn.Server.main_loop`` ticking every :data:`TICK_S`: ``on_tick`` is told the
    counter ten 0.1 s ticks would have reached, so it refreshes the ``Date`` header on
    every tick (uvicorn does so on every tenth) and checks for a shutdown as before."""
    counter = 0
    should_exit = await self.on_tick(counter)
    while not should_exit:
        counter = (counter + 10) % 864_000
        await asyncio.sleep(TICK_S)
        should_exit = await self.on_tick(counter)


def quiet_server_loop() -> None:
    """Make this process's uvicorn servers tick every :data:`TICK_S` instead of 0.1 s (an
    API process serves nothing else; a worker process calls it from :func:`app_factory`,
    before its server's loop starts)."""
    uvicorn.Server.main_loop = _main_loop  # type: ignore[method-assign]


def default_workers() -> int:
    """The cores this process may run on (at least 1): the default of ``aiorch up --api-workers``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)


def app_factory() -> FastAPI:
    """The API app of one uvicorn worker process: its own System, built from the
    environment (``AIORCH_*``), kept referenced by the app (its store closes its pool when
    collected). Each worker runs the schema step and the bootstrap admin itself: both are
    safe when several processes start at once (roles already start together on a new
    database), and the parent process then imports nothing but uvicorn, so the workers
    start as fast as one API process did. Logging is set up as in the ``aiorch`` CLI (a
    spawned worker inherits none)."""
    logging.basicConfig(level="INFO", format=LOG_FORMAT)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    quiet_server_loop()
    return _app()


def _app() -> FastAPI:
    """The API app of a System built here (the schema step and the bootstrap admin first),
    which the app holds."""
    from infra.bootstrap import bootstrap
    from infra.roles import api_app, bootstrap_admin
    from infra.settings import load_settings

    system = bootstrap(load_settings())
    bootstrap_admin(system)
    app = api_app(system)
    app.state.system = system
    return app


def serve(host: str, port: int, workers: int = 1) -> None:
    """Run the API on ``host:port`` until SIGTERM/SIGINT, in this process (``workers`` ≤ 1)
    or in ``workers`` uvicorn worker processes sharing the port (:func:`app_factory`)."""
    # proxy_headers off: the app believes X-Forwarded-* only from AIORCH_TRUSTED_PROXIES
    if workers <= 1:
        quiet_server_loop()
        uvicorn.run(_app(), host=host, port=port, log_level="info", access_log=False, proxy_headers=False)
        return
    uvicorn.run(
        FACTORY,
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        proxy_headers=False,
    )
