"""Services for a benchmark: a fresh PostgreSQL database, an embedded broker, the System,
and the roles (projector, relay, API) running as child processes (default) or threads.

PostgreSQL, in order of preference:

1. ``AIORCH_BENCH_DATABASE_URL`` (a server URL; a fresh database is created on it and
   dropped at the end);
2. the machine's server at ``postgresql://postgres@127.0.0.1:5432/postgres`` if it answers;
3. an embedded server (``infra.embedded.start_postgres``) in a ``/tmp`` folder.

The broker is always an embedded Tansu (``infra.embedded.start_broker``) on a free port.

Roles run like ``aiorch up`` runs them: each in its own process (the ``infra.cli``
commands ``api``, ``projector``, ``relay``, launched through :mod:`bench.role`, which keeps
their System alive), so the API, the projector and the benchmark's clients do not share one
GIL. ``mode="thread"`` runs them in this process instead (as the tests do). Settings are the
production defaults (poll intervals, pool sizes, read wait), except addresses, data folder,
secret key and a unique topic prefix.

Everything is stopped and removed when the :class:`BenchSystem` closes, also on Ctrl-C or
SIGTERM; role processes also get SIGTERM if the benchmark process is killed.
``AIORCH_BENCH_KEEP=1`` keeps the temporary folder (role logs).

Usage::

    with BenchSystem(api=True) as bench:
        editor = bench.create_user("bench-editor", "editor")
        http = bench.login("bench-editor")
        project = bench.create_project_http(http)
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python bench/x.py`` from anywhere
    sys.path.insert(0, str(REPO))

from infra.bootstrap import System, bootstrap  # noqa: E402
from infra.embedded import free_port, start_broker, start_postgres, stop_postgres, wait_for_port  # noqa: E402
from infra.settings import load_settings  # noqa: E402

MACHINE_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
SECRET_KEY = "bench-secret-key-0123456789abcdef0123456789abcdef"  # noqa: S105 - a benchmark secret
PASSWORD = "bench-password-123"  # noqa: S105 - a benchmark password
_T0 = time.monotonic()


class SetupError(RuntimeError):
    """A service of the benchmark did not start; the script exits non-zero."""


def say(message: str) -> None:
    """Print a progress line with the seconds since start."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", flush=True)


# -- statistics -------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile ``p`` (0–100) of already sorted values (nan if empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, int(-(-p * len(sorted_values) // 100)))  # ceil(p/100 * n), at least 1
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summary(values: Sequence[float]) -> dict[str, float]:
    """``{n, mean, p50, p90, p99, max}`` of ``values`` (same unit as given)."""
    s = sorted(values)
    return {"n": len(s), "mean": (sum(s) / len(s)) if s else float("nan"), "p50": percentile(s, 50),
            "p90": percentile(s, 90), "p99": percentile(s, 99), "max": s[-1] if s else float("nan")}


def first_time_reaching(observations: Sequence[tuple[float, int]], positions: Sequence[int], position: int) -> float | None:
    """The time of the first observation whose position is ≥ ``position`` (None if none).

    ``observations`` are ``(time, position)`` with non-decreasing positions; ``positions``
    is the list of their positions (for bisection).
    """
    i = bisect_left(positions, position)
    return observations[i][0] if i < len(observations) else None


# -- machine-readable summaries (bench/targets.py) ------------------------------------------------


def target_entry(target: int, name: str, figure: float | None, unit: str, goal: str, met: bool, *,
                 comparator: float | None = None, comparator_name: str | None = None, ratio: float | None = None,
                 details: dict[str, Any] | None = None) -> dict[str, Any]:
    """One figure of issue 10's targets, as :mod:`bench.targets` reads it. ``figure`` is None
    when it could not be measured (then ``met`` is False); ``goal`` is human text (``"p99 ≤ 50
    ms"``, ``"≥ 1.0× classic"``); ``ratio`` is figure ÷ comparator when the issue names a
    comparator (else None: the goal is absolute)."""
    def clean(x: float | None) -> float | None:
        return None if x is None or x != x else float(x)

    return {"target": target, "name": name, "figure": clean(figure), "unit": unit, "goal": goal,
            "comparator": clean(comparator), "comparator_name": comparator_name, "ratio": clean(ratio),
            "met": bool(met and figure is not None), "details": details or {}}


def write_summary(path: Path | None, script: str, targets: list[dict[str, Any]], other_cores: float | None,
                  cpu: dict[str, Any] | None = None, **extra: Any) -> None:
    """Write ``{"script", "targets", "other_cores", "cpu", ...extra}`` as JSON to ``path``
    (nothing when ``path`` is None). NaN becomes null."""
    if path is None:
        return
    import json
    import math

    def fix(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): fix(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [fix(v) for v in value]
        return value

    body = {"script": script, "targets": targets, "other_cores": other_cores, "cpu": cpu or {}, **extra}
    Path(path).write_text(json.dumps(fix(body), indent=1, default=str) + "\n")


# -- CPU accounting -----------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from ``/proc/stat``."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / _TICK, sum(values) / _TICK


_PG_SERVER_TASKS = ("checkpointer", "background writer", "walwriter", "autovacuum launcher",
                    "logical replication launcher", "stats collector", "archiver", "io worker")


def parent_pid(pid: int) -> int:
    """The parent process id of ``pid`` (0 if it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def postgres_processes(postmaster: int, database: str) -> dict[int, float]:
    """CPU seconds per process of the PostgreSQL server ``postmaster`` that works for
    ``database``: its backends (and autovacuum workers) and the server's own processes
    (postmaster, WAL writer, checkpointer, ...), which every database shares. Backends of
    other databases and other servers are left out (other people's tests)."""
    out: dict[int, float] = {}
    if postmaster:
        out[postmaster] = process_cpu_s(postmaster)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if (entry / "comm").read_text().strip() != "postgres" or parent_pid(pid) != postmaster:
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f" {database} " in f" {title} " or any(task in title for task in _PG_SERVER_TASKS):
            out[pid] = process_cpu_s(pid)
    return out


def busy_cores_elsewhere(seconds: float = 1.0, exclude: Sequence[int] = ()) -> float:
    """Cores used over ``seconds`` by processes other than this one and ``exclude``."""
    pids = [os.getpid(), *exclude]
    busy0, own0 = machine_cpu()[0], sum(process_cpu_s(p) for p in pids)
    time.sleep(seconds)
    busy1, own1 = machine_cpu()[0], sum(process_cpu_s(p) for p in pids)
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / seconds


def warn_if_busy(seconds: float = 1.0, limit: float = 0.25) -> float:
    """Print a warning when other processes keep the machine busy (figures would be noisy)."""
    other = busy_cores_elsewhere(seconds)
    if other > limit:
        say(f"WARNING: other processes use {other:.2f} of {os.cpu_count()} cores right now; figures will be low and noisy")
    return other


class CpuMeter:
    """CPU use of the roles, this process, PostgreSQL and the machine over an interval.

    ``start()`` then ``stop()``; ``report()`` gives lines like ``api 0.82 cores``.
    ``postgres`` is ``(postmaster pid, database)`` when the server runs on this machine.
    """

    def __init__(self, pids: dict[str, int], postgres: tuple[int, str] = (0, "")) -> None:
        self.pids = {"bench (this process)": os.getpid(), **pids}
        self.postmaster, self.database = postgres
        self._pg_start: dict[int, float] = {}
        self._start: dict[str, float] = {}
        self._used: dict[str, float] = {}
        self._wall = 0.0

    def _sample(self) -> dict[str, float]:
        out = {name: process_cpu_s(pid) for name, pid in self.pids.items()}
        out["machine (busy, all processes)"] = machine_cpu()[0]
        out["_wall"] = time.monotonic()
        return out

    def _pg_sample(self) -> dict[int, float]:
        return postgres_processes(self.postmaster, self.database) if self.postmaster else {}

    def start(self) -> None:
        """Take the first sample."""
        self._pg_start = self._pg_sample()
        self._start = self._sample()

    def stop(self) -> None:
        """Take the second sample."""
        end = self._sample()
        pg_end = self._pg_sample()
        self._wall = end.pop("_wall") - self._start.pop("_wall")
        self._used = {k: end[k] - self._start[k] for k in end}
        if self.postmaster:  # per process, so that backends ending meanwhile do not count negative
            self._used["postgres (bench db + server)"] = sum(
                cpu - self._pg_start.get(pid, 0.0) for pid, cpu in pg_end.items())

    def other_cores(self) -> float:
        """Cores used on average by processes outside this benchmark (a noisy machine)."""
        busy = self._used["machine (busy, all processes)"]
        ours = sum(v for k, v in self._used.items() if not k.startswith("machine"))
        return max(0.0, busy - ours) / self._wall

    def as_dict(self, operations: int = 0) -> dict[str, dict[str, float]]:
        """``{group: {"cores": …, "ms_per_op": …}}`` over the interval (``ms_per_op`` with
        ``operations``), plus ``other (not this benchmark)``."""
        out: dict[str, dict[str, float]] = {}
        wall = self._wall or float("nan")
        for name, used in self._used.items():
            entry = {"cores": used / wall}
            if operations:
                entry["ms_per_op"] = used * 1000 / operations
            out[name] = entry
        out["other (not this benchmark)"] = {"cores": self.other_cores()}
        return out

    def report(self, operations: int = 0) -> list[str]:
        """One line per process group: cores used on average over the interval and, given the
        number of ``operations`` done in it, CPU milliseconds per operation."""
        cores = os.cpu_count() or 1

        def line(name: str, used: float) -> str:
            per_op = f"  {used * 1000 / operations:6.2f} ms CPU per op" if operations else ""
            return f"{name:32s} {used / self._wall:5.2f} cores{per_op}"

        machine = "machine (busy, all processes)"
        lines = [line(name, used) for name, used in self._used.items() if name != machine]
        lines.append(line(machine, self._used[machine]))
        lines.append(line("other (not this benchmark)", self.other_cores() * self._wall))
        lines.append(f"{'(machine has)':32s} {cores:5d} cores")
        return lines


# -- child processes ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the benchmark process dies (Linux), even by SIGKILL."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Role:
    """A role running as a child process, logging to a file: ``python -m bench.role <args>``
    (the ``infra.cli`` command, with its System kept alive; see :mod:`bench.role`), or
    ``python -m infra.cli <args>`` unchanged when ``AIORCH_BENCH_PLAIN_CLI=1``.

    With ``profile_out``, the role runs under cProfile and writes its stats there when it
    stops.
    """

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_file: Path,
                 profile_out: Path | None = None) -> None:
        self.name, self.log_file = name, log_file
        self._log = open(log_file, "ab")  # noqa: SIM115 - closed in stop()
        if profile_out:
            module = ["bench.role", "--profile", str(profile_out)]
        elif os.environ.get("AIORCH_BENCH_PLAIN_CLI") == "1":
            module = ["infra.cli"]
        else:
            module = ["bench.role"]
        self.proc = subprocess.Popen([sys.executable, "-m", *module, *args], cwd=REPO, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def check(self) -> None:
        """Raise SetupError (with the log's tail) if the child has exited."""
        if self.proc.poll() is not None:
            raise SetupError(f"{self.name} exited with {self.proc.returncode}:\n{_tail(self.log_file)}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


class ThreadRole:
    """A role (``run_forever``/``stop``) running in a thread of this process."""

    def __init__(self, name: str, role: Any) -> None:
        self.name, self.role = name, role
        self.thread = threading.Thread(target=role.run_forever, name=name, daemon=True)
        self.thread.start()

    pid = os.getpid()

    def check(self) -> None:
        """Raise SetupError if the thread has ended."""
        if not self.thread.is_alive():
            raise SetupError(f"{self.name} thread ended")

    def stop(self, timeout: float = 20.0) -> None:
        """Ask the role to stop and join its thread."""
        self.role.stop()
        self.thread.join(timeout)


class ThreadApi:
    """The API under uvicorn in a thread of this process (like the tests)."""

    name = "api"
    pid = os.getpid()

    def __init__(self, system: System, port: int) -> None:
        import uvicorn

        from infra.roles import api_app

        config = uvicorn.Config(api_app(system), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)
        self.thread.start()

    def check(self) -> None:
        """Raise SetupError if uvicorn has ended."""
        if not self.thread.is_alive():
            raise SetupError("the API thread ended")

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit and join its thread."""
        self.server.should_exit = True
        self.thread.join(timeout)


# -- the system under benchmark ---------------------------------------------------------------------


class BenchSystem:
    """Everything a benchmark needs, started in ``__enter__`` (or :meth:`start`) and torn down
    in ``__exit__`` (or :meth:`close`, also registered with ``atexit``).

    Args:
        api: start the REST API (its URL is :attr:`api_url`).
        projector: start the read-model projector.
        relay: start the outbox relay (publishes every event to the broker, as in production).
        mode: ``"process"`` (each role a ``python -m infra.cli`` child) or ``"thread"``.
        settings: overrides for :func:`infra.settings.load_settings` (default: production
            defaults, except addresses, data folder, secret and a unique topic prefix).
        profile: names of roles to run under cProfile (process mode only); their stats go
            to ``<profile_dir>/<role>.prof`` when the roles stop.

    Raises:
        SetupError: a service did not start (from :meth:`start`).
    """

    def __init__(self, *, api: bool = True, projector: bool = True, relay: bool = True, mode: str = "process",
                 settings: dict[str, Any] | None = None, profile: Sequence[str] = (),
                 profile_dir: Path | None = None, api_workers: int = 1) -> None:
        if mode not in ("process", "thread"):
            raise ValueError("mode is 'process' or 'thread'")
        if profile and mode != "process":
            raise ValueError("profiling needs mode='process'")
        self.profile = set(profile)
        self.profile_dir = profile_dir or Path.cwd()
        self.want_api, self.want_projector, self.want_relay, self.mode = api, projector, relay, mode
        self.api_workers = api_workers if mode == "process" else 1
        self.overrides = settings or {}
        self.tmp = Path(tempfile.mkdtemp(prefix="aiorch-bench-", dir="/tmp"))
        self.server_url = ""
        self.database_url = ""
        self.database_name = ""
        self.postmaster = 0
        self.pg_kind = ""
        self.broker_proc: Any = None
        self.bootstrap_servers = ""
        self.system: System | None = None
        self.roles: dict[str, Any] = {}
        self.api_url = ""
        self._embedded_pgdata: Path | None = None
        self._closed = False
        self._users: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> BenchSystem:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> BenchSystem:
        """Start PostgreSQL (or pick the server), the broker, the System and the roles."""
        atexit.register(self.close)
        _sigterm_exits()
        try:
            self._start_postgres()
            self._start_broker()
            tag = uuid.uuid4().hex[:8]
            self.settings = load_settings(**{
                "database_url": self.database_url, "kafka_bootstrap_servers": self.bootstrap_servers,
                "data_dir": self.tmp / "data", "secret_key": SECRET_KEY, "topic_prefix": f"bench{tag}",
                "consumer_group": f"bench{tag}", **self.overrides})
            self.system = bootstrap(self.settings)  # creates the event store and read-model tables
            if self.mode == "thread":
                self._start_threads()
            else:
                self._start_processes()
            if self.want_projector:
                self.wait_projected(self.system.platform.recorder.max_notification_id() or 0, 30)
        except SetupError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise SetupError(f"{type(exc).__name__}: {exc}") from exc
        return self

    def _start_postgres(self) -> None:
        configured = os.environ.get("AIORCH_BENCH_DATABASE_URL")
        if configured:
            self.server_url, self.pg_kind = configured, "AIORCH_BENCH_DATABASE_URL"
        else:
            try:
                with psycopg.connect(MACHINE_PG, connect_timeout=2):
                    pass
                self.server_url, self.pg_kind = MACHINE_PG, "the machine's server"
            except psycopg.Error:
                say("no PostgreSQL at 127.0.0.1:5432; starting an embedded one")
                self._embedded_pgdata = self.tmp / "pg"
                _server, self.server_url = start_postgres(self._embedded_pgdata)
                self.pg_kind = "embedded"
        from sqlalchemy.engine import make_url

        self.database_name = f"aiorch_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.server_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{self.database_name}"')
            version = conn.execute("SHOW server_version").fetchone()
            backend = conn.info.backend_pid
        # The server's postmaster, if it runs here (for CPU accounting): our backend's parent.
        self.postmaster = parent_pid(backend) if Path(f"/proc/{backend}").exists() else 0
        self.database_url = make_url(self.server_url).set(database=self.database_name).render_as_string(hide_password=False)
        say(f"PostgreSQL {version[0] if version else '?'} ({self.pg_kind}): database {self.database_name}")

    def _start_broker(self) -> None:
        self.broker_proc, self.bootstrap_servers = start_broker(free_port(), log_file=self.tmp / "tansu.log")
        say(f"broker (embedded Tansu) at {self.bootstrap_servers}")

    def role_env(self) -> dict[str, str]:
        """The environment of a role process: this one's plus the benchmark's settings."""
        env = dict(os.environ)
        s = self.settings
        env.update({
            "AIORCH_DATABASE_URL": self.database_url, "AIORCH_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "AIORCH_SECRET_KEY": SECRET_KEY, "AIORCH_DATA_DIR": str(s.data_dir),
            "AIORCH_TOPIC_PREFIX": s.topic_prefix, "AIORCH_CONSUMER_GROUP": s.consumer_group,
            "PYTHONUNBUFFERED": "1",
        })
        for key, value in self.overrides.items():
            env[f"AIORCH_{key.upper()}"] = str(value)
        return env

    def _start_processes(self) -> None:
        env = self.role_env()
        for name, wanted in (("projector", self.want_projector), ("relay", self.want_relay)):
            if wanted:
                self.roles[name] = Role(name, [name], env, self.tmp / f"{name}.log", self.profile_out(name))
                say(f"{name}: process {self.roles[name].pid}")
        if self.want_api:
            port = free_port()
            workers = ["--workers", str(self.api_workers)] if self.api_workers > 1 else []
            api = self.roles["api"] = Role("api", ["api", "--port", str(port), *workers], env, self.tmp / "api.log",
                                           self.profile_out("api"))
            self.api_url = f"http://127.0.0.1:{port}"
            self._wait_api(api)
            self._wait_workers(api)
            say(f"api: process {api.pid} at {self.api_url}"
                + (f" ({self.api_workers} uvicorn workers)" if self.api_workers > 1 else ""))
        time.sleep(0.5)
        for role in self.roles.values():
            role.check()

    def profile_out(self, role: str) -> Path | None:
        """Where ``role`` writes its profile (None when it is not profiled)."""
        return self.profile_dir / f"{role}.prof" if role in self.profile else None

    def _start_threads(self) -> None:
        from infra.roles import relay

        assert self.system is not None
        if self.want_projector:
            self.roles["projector"] = ThreadRole("projector", self.system.projector())
        if self.want_relay:
            self.roles["relay"] = ThreadRole("relay", relay(self.system))
        if self.want_api:
            port = free_port()
            api = self.roles["api"] = ThreadApi(self.system, port)
            self.api_url = f"http://127.0.0.1:{port}"
            self._wait_api(api)
        say(f"roles in threads of this process: {', '.join(self.roles)}")

    def _wait_api(self, api: Any, timeout: float = 30.0) -> None:
        port = int(self.api_url.rsplit(":", 1)[1])
        deadline = time.monotonic() + timeout
        while True:
            api.check()
            try:
                wait_for_port("127.0.0.1", port, timeout=0.5)
                if httpx.get(f"{self.api_url}/health/live", timeout=2).status_code == 200:
                    return
            except (TimeoutError, httpx.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise SetupError(f"the API did not answer within {timeout} s")
            time.sleep(0.1)

    def _wait_workers(self, api: Any, timeout: float = 60.0) -> None:
        """Wait until every uvicorn worker of the API process has started (its log says so)."""
        deadline = time.monotonic() + timeout
        while self.api_workers > 1:
            api.check()
            if (self.tmp / "api.log").read_text(errors="replace").count("Application startup complete") >= self.api_workers:
                return
            if time.monotonic() > deadline:
                raise SetupError(f"the API's {self.api_workers} workers did not start within {timeout} s")
            time.sleep(0.1)

    def check_roles(self) -> None:
        """Raise SetupError if a role has exited."""
        for role in self.roles.values():
            role.check()

    def postgres_ids(self) -> tuple[int, str]:
        """``(postmaster pid, database)`` for :class:`CpuMeter` (pid 0 when not local)."""
        return self.postmaster, self.database_name

    def pids(self) -> dict[str, int]:
        """Process ids of the role processes (``{}`` in thread mode)."""
        return {name: role.pid for name, role in self.roles.items() if isinstance(role, Role)}

    def close(self) -> None:
        """Stop the roles and the broker, drop the database, remove the temporary folder.
        A second Ctrl-C or SIGTERM during the clean-up is ignored, so it always finishes."""
        if self._closed:
            return
        self._closed = True
        previous: list[tuple[signal.Signals, Any]] = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous.append((sig, signal.signal(sig, signal.SIG_IGN)))
        try:
            self._clean_up()
        finally:
            for sig, handler in previous:
                signal.signal(sig, handler)

    def _clean_up(self) -> None:
        keep = os.environ.get("AIORCH_BENCH_KEEP") == "1"
        for name, role in reversed(list(self.roles.items())):
            try:
                role.stop()
            except Exception as exc:  # noqa: BLE001 - the clean-up goes on
                print(f"stopping {name}: {exc}", file=sys.stderr)
        if self.system is not None:
            self.system.close()
        if self.broker_proc is not None:
            self.broker_proc.kill()
            self.broker_proc.wait(5)
        if self.database_name and self.server_url:
            try:
                with psycopg.connect(self.server_url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)')
            except psycopg.Error as exc:
                print(f"dropping {self.database_name}: {exc}", file=sys.stderr)
        if self._embedded_pgdata is not None:
            stop_postgres(self._embedded_pgdata)
        if keep:
            print(f"kept {self.tmp} (AIORCH_BENCH_KEEP=1)", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------------

    @property
    def sys(self) -> System:
        """The System (raises if not started)."""
        assert self.system is not None, "start() first"
        return self.system

    def projected_position(self) -> int:
        """The read models' tracked position, as the API sees it."""
        system: Any = self.sys
        if hasattr(system, "projector_position"):
            return int(system.projector_position())
        from projections import projector

        with system.engine.connect() as conn:
            return int(projector.current_position(conn))

    def tracking_row(self) -> tuple[str, str]:
        """``(table, name)`` of the tracking row of the read models being served, for fast
        polling with plain SQL (the projector's position is that row's ``position``)."""
        from projections import tables as t

        try:
            from projections.generations import serving_generation, tracking_name
        except ImportError:  # before read-model generations
            from projections import projector

            return t.tracking.name, str(getattr(projector, "NAME", "read_models_v1"))
        with self.sys.engine.connect() as conn:
            generation = serving_generation(conn)
        if generation is None:
            raise SetupError("no serving read-model generation")
        return t.tracking.name, tracking_name(generation)

    def max_position(self) -> int:
        """The store's last notification id."""
        return self.sys.platform.recorder.max_notification_id() or 0

    def wait_projected(self, position: int, timeout: float = 30.0) -> float:
        """Block until the read models reach ``position``; returns the seconds waited.

        Raises SetupError on timeout (or if a role died).
        """
        t0 = time.monotonic()
        while self.projected_position() < position:
            self.check_roles()
            if time.monotonic() - t0 > timeout:
                raise SetupError(f"the projector did not reach position {position} within {timeout} s "
                                 f"(at {self.projected_position()})")
            time.sleep(0.01)
        return time.monotonic() - t0

    def create_user(self, username: str, role: str = "editor") -> str:
        """Create a user (password :data:`PASSWORD`) through the write side; returns its id."""
        from infra.roles import create_user

        user_id = create_user(self.sys, username, PASSWORD, role)
        self._users[username] = user_id
        return user_id

    def actor_context(self, username: str, role: str = "editor") -> Any:
        """A command :class:`~commands.context.Context` acting as a user created here."""
        from commands.context import Actor, Context

        return Context(Actor(id=self._users[username], username=username, role=role), f"bench-{uuid.uuid4()}")

    def login(self, username: str, **client_kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` on the API with a bearer token of ``username``."""
        if self.want_projector:
            self.wait_projected(self.max_position())
        http = httpx.Client(base_url=self.api_url, timeout=30, **client_kwargs)
        resp = http.post("/api/token/", json={"username": username, "password": PASSWORD})
        if resp.status_code != 200:
            raise SetupError(f"login as {username}: {resp.status_code} {resp.text}")
        http.headers["Authorization"] = f"Bearer {resp.json()['access']}"
        return http

    def create_project_http(self, http: httpx.Client, name: str = "Bench project") -> str:
        """Create a project over the API; returns its id."""
        resp = http.post("/api/projects/", json={"name": name})
        if resp.status_code != 201:
            raise SetupError(f"creating a project: {resp.status_code} {resp.text}")
        return str(resp.json()["id"])

    def create_project(self, username: str, name: str = "Bench project", role: str = "editor") -> str:
        """Create a project through the write side, owned by ``username``; returns its id."""
        from commands.messages import CreateProject

        project_id, _ = self.sys.platform.create_project(CreateProject(name), self.actor_context(username, role))
        return str(project_id)


def print_profile(path: Path, limit: int = 25) -> None:
    """Print the top ``limit`` functions of a cProfile stats file by own and cumulative time."""
    import pstats

    if not path.exists():
        print(f"(no profile at {path})")
        return
    stats = pstats.Stats(str(path))
    stats.strip_dirs()
    print(f"--- {path.name}: by own time (tottime, CPU s per thread clock) ---")
    stats.sort_stats("tottime").print_stats(limit)
    print(f"--- {path.name}: by cumulative time ---")
    stats.sort_stats("cumulative").print_stats(limit)


def _sigterm_exits() -> None:
    """Turn SIGTERM into SystemExit in the main thread, so ``with`` blocks clean up."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def run_main(main: Callable[[], int]) -> None:
    """Run a benchmark's ``main``; a SetupError prints and exits 2, Ctrl-C exits 130."""
    try:
        code = main()
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code)
