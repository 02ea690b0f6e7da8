"""Run one role of ``infra.cli`` (``api``, ``projector``, ``relay``) for a benchmark:
the real CLI command, with two additions.

1. The :class:`~infra.bootstrap.System` the command builds is kept referenced. ``aiorch
   projector`` and ``aiorch relay`` keep only the role built from it
   (``bootstrap(load_settings()).projector()``); the System sits in a reference cycle
   (``platform.missing_engine`` is a bound method of the System), so the cyclic garbage
   collector frees it at some point under load, and eventsourcing's ``Application.__del__``
   closes the store's connection pool under the running role: from then on every batch
   fails with ``PoolClosed`` and the role retries forever. Keeping a reference here makes
   the benchmarks measure speed rather than that bug. ``AIORCH_BENCH_PLAIN_CLI=1`` makes
   :mod:`bench.common` run ``python -m infra.cli`` unchanged instead of this module.
2. ``--profile FILE``: every thread runs under cProfile with its own CPU clock
   (``time.thread_time``, so threads that wait do not inflate figures), and the merged
   stats are written to FILE when the role exits (SIGTERM stops each role gracefully).
   cProfile slows the role down roughly 1.5–2x.

    AIORCH_DATABASE_URL=... python -m bench.role [--profile api.prof] api --port 8001
    python -m pstats api.prof
"""

from __future__ import annotations

import cProfile
import pstats
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()
_systems: list[Any] = []


def _thread_start(_frame: Any, _event: str, _arg: Any) -> None:
    """First profile event of a new thread: replace this hook by a real profiler."""
    profile = cProfile.Profile(time.thread_time)
    with _lock:
        _profiles.append(profile)
    profile.enable()


def dump(out: Path) -> None:
    """Merge every thread's profile into ``out`` (pstats format)."""
    stats: pstats.Stats | None = None
    with _lock:
        profiles = list(_profiles)
    for profile in profiles:
        profile.create_stats()
        if not getattr(profile, "stats", None):
            continue
        if stats is None:
            stats = pstats.Stats(profile)
        else:
            stats.add(profile)
    if stats is not None:
        stats.dump_stats(str(out))


def _keep_systems() -> None:
    """Make ``infra.bootstrap.bootstrap`` (which the ``infra.cli`` commands look up when they
    run) remember every System it builds."""
    import infra.bootstrap

    real = infra.bootstrap.bootstrap

    def bootstrap(*args: Any, **kwargs: Any) -> Any:
        system = real(*args, **kwargs)
        _systems.append(system)
        return system

    infra.bootstrap.bootstrap = bootstrap


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    """``[--profile FILE] ROLE [ROLE ARGS...]``."""
    args = sys.argv[1:]
    out: Path | None = None
    if args[:1] == ["--profile"]:
        if len(args) < 3:
            raise SystemExit("usage: python -m bench.role [--profile FILE] ROLE [ARGS...]")
        out, args = Path(args[1]), args[2:]
    from infra.cli import app

    _keep_systems()
    if out is None:
        app(args)
        return
    # uvicorn re-raises a captured SIGTERM after its graceful shutdown: make that an
    # exception, so that the stats are still written.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    threading.setprofile(_thread_start)
    main_profile = cProfile.Profile(time.thread_time)
    _profiles.append(main_profile)
    main_profile.enable()
    try:
        app(args, standalone_mode=False)
    finally:
        main_profile.disable()
        dump(out)


if __name__ == "__main__":
    main()
