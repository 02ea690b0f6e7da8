"""Run one role of ``infra.cli`` (``api``, ``projector``, ``relay``) under cProfile, every
thread profiled with its own CPU clock (``time.thread_time``), and write the merged stats
to ``--out`` when the role exits (SIGTERM stops each role gracefully).

Used by the benchmarks' ``--profile`` option; by hand::

    AIORCH_DATABASE_URL=... /work/venv/bin/python -m bench.profile_role --out api.prof api --port 8001
    /work/venv/bin/python -m pstats api.prof

Figures are CPU time per thread, so threads that wait (the API's read-your-writes wait,
the projector's LISTEN) do not inflate them; cProfile itself adds overhead (~1.5–2x).
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


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
        if not profile.stats:  # type: ignore[attr-defined]
            continue
        if stats is None:
            stats = pstats.Stats(profile)
        else:
            stats.add(profile)
    if stats is not None:
        stats.dump_stats(str(out))


def main() -> None:
    """``--out FILE ROLE [ROLE ARGS...]``."""
    if len(sys.argv) < 4 or sys.argv[1] != "--out":
        raise SystemExit("usage: python -m bench.profile_role --out FILE ROLE [ARGS...]")
    out = Path(sys.argv[2])
    role_args = sys.argv[3:]
    threading.setprofile(_thread_start)
    main_profile = cProfile.Profile(time.thread_time)
    _profiles.append(main_profile)
    from infra.cli import app

    main_profile.enable()
    try:
        app(role_args, standalone_mode=False)
    finally:
        main_profile.disable()
        dump(out)


if __name__ == "__main__":
    main()
