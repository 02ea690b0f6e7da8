"""aiorch against the classic stack it replaces, measured side by side in one run (issue 10,
targets 1 and 2), with one load client for both.

Sides, both on the same PostgreSQL server (each its own fresh database):

- **aiorch**: what ``aiorch up --processors 0`` runs — the API, the projector and the relay,
  each its own process (:class:`bench.common.BenchSystem`, production settings), and an
  embedded broker (Tansu).
- **classic**: :mod:`bench.classic.app` under uvicorn with as many worker processes as
  aiorch's API has (``--workers``; default: counted from aiorch's API process tree), a Redis
  (``redis-server``, no persistence) for Celery's ``apply_async``. No Celery worker runs
  during targets 1–2 (aiorch runs no processor either); ``--e2e-seconds`` adds a phase with a
  Celery worker (solo pool) for the classic stack's POST → running time, paced at
  ``--e2e-rate`` so the worker is idle when a job comes (target 7's comparator).

Targets, each measured with :mod:`bench.loadclient` (its own process: raw asyncio HTTP/1.1,
keep-alive, ``--clients`` connections, ``--warmup`` + ``--seconds``):

1. ``POST /api/jobs/`` (JSON tts job; a "writer" user): aiorch's rate ≥ 1.0× the classic rate
   and aiorch's p99 ≤ the classic p99.
2. ``GET /api/jobs/{id}/`` (cycling over a "reader" user's ``--seed-jobs`` jobs) ≥ 1.0×, and
   ``GET /api/jobs/?page_size=50`` (the reader's first page; both sides hold the same number
   of the reader's jobs) ≥ 0.5×.

Order: ``--rounds`` rounds; in each, every target is measured on aiorch, then on the classic
stack (A, B, A, B …). The summary takes the median over rounds of each figure; the ratio is
aiorch's median / the classic median. CPU is read from ``/proc`` per process (a role's
process tree, the PostgreSQL backends of its database, the server's own processes) over the
client's measured window; ``other`` is the machine's busy time minus all of this run's
processes (both sides, idle or not, and the client): the cores other people's work took.

    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/compare.py            # 3 rounds × 10 s
    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/compare.py --seconds 3 --rounds 1   # smoke

Exits 0 whether or not a target is met; 2 when the services could not be set up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psutil
import psycopg

from bench.common import (
    _PG_SERVER_TASKS,
    BenchSystem,
    SetupError,
    _die_with_parent,
    _tail,
    machine_cpu,
    parent_pid,
    process_cpu_s,
    run_main,
    say,
    summary,
    target_entry,
    warn_if_busy,
    write_summary,
)
from infra.embedded import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[1]
TEXT = "The quick brown fox jumps over the lazy dog. This sentence is only a benchmark payload."
CLASSIC_SECRET = "classic-bench-secret-0123456789abcdef0123456789abcdef"  # noqa: S105


# -- CPU per role ----------------------------------------------------------------------------


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants (empty if it is gone)."""
    try:
        proc = psutil.Process(pid)
        return [pid, *(c.pid for c in proc.children(recursive=True))]
    except psutil.Error:
        return []


def pg_pids(postmaster: int, database: str) -> tuple[list[int], list[int]]:
    """``(backends of database, the server's own processes)`` of the server ``postmaster``."""
    backends: list[int] = []
    server: list[int] = [postmaster] if postmaster else []
    if not postmaster:
        return backends, server
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
        if database and f" {database} " in f" {title} ":
            backends.append(pid)
        elif any(task in title for task in _PG_SERVER_TASKS):
            server.append(pid)
    return backends, server


class Groups:
    """Named groups of processes (re-listed at each sample: backends come and go).

    ``groups`` maps a name to a function returning the group's pids now."""

    def __init__(self, groups: dict[str, Any]) -> None:
        self.groups = groups

    def sample(self) -> dict[str, dict[int, float]]:
        return {name: {pid: process_cpu_s(pid) for pid in fn()} for name, fn in self.groups.items()}


def cpu_used(start: dict[str, dict[int, float]], end: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds per group between two samples (per process; processes that started in
    between count from 0, those that ended are lost)."""
    return {name: sum(cpu - start.get(name, {}).get(pid, 0.0) for pid, cpu in procs.items())
            for name, procs in end.items()}


# -- the classic stack -----------------------------------------------------------------------


class Proc:
    """A child process logging to a file, killed with the benchmark."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log_file = name, log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise SetupError(f"{self.name} exited with {self.proc.returncode}:\n{_tail(self.log_file)}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@dataclass
class Classic:
    """The classic stack on ``server_url``'s server: a fresh database, Redis, uvicorn workers."""

    server_url: str
    workers: int
    tmp: Path
    database_name: str = ""
    database_url: str = ""
    redis: Proc | None = None
    api: Proc | None = None
    celery: Proc | None = None
    redis_port: int = 0
    api_url: str = ""
    users: dict[str, str] = field(default_factory=dict)
    projects: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"CLASSIC_DATABASE_URL": self.database_url, "CLASSIC_SECRET": CLASSIC_SECRET,
                    "CLASSIC_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0", "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"})
        return env

    def start(self) -> None:
        from sqlalchemy.engine import make_url

        from bench.classic.app import create_schema

        redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(redis_server).exists():
            raise SetupError("no redis-server on this machine")
        self.database_name = f"aiorch_classic_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.server_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{self.database_name}"')
        self.database_url = make_url(self.server_url).set(database=self.database_name).render_as_string(
            hide_password=False).replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            create_schema(conn)
        self.redis_port = free_port()
        self.redis = Proc("redis", [redis_server, "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                    "--save", "", "--appendonly", "no", "--daemonize", "no"],
                          self.env(), self.tmp / "redis.log")
        wait_for_port("127.0.0.1", self.redis_port, timeout=10)
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        self.api = Proc("classic api", [sys.executable, "-m", "uvicorn", "bench.classic.app:app", "--host", "127.0.0.1",
                                        "--port", str(port), "--workers", str(self.workers), "--no-access-log",
                                        "--log-level", "warning"], self.env(), self.tmp / "classic-api.log")
        deadline = time.monotonic() + 30
        while True:
            self.api.check()
            try:
                if httpx.get(f"{self.api_url}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SetupError("the classic API did not answer within 30 s")
            time.sleep(0.1)
        say(f"classic: uvicorn ({self.workers} worker{'s' if self.workers > 1 else ''}) pid {self.api.pid} at "
            f"{self.api_url}, redis pid {self.redis.pid}, database {self.database_name}")

    def create_user(self, username: str, role: str = "editor") -> str:
        user_id, project_id = str(uuid.uuid4()), str(uuid.uuid4())
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO users (id, username, role) VALUES (%s, %s, %s)", (user_id, username, role))
            conn.execute("INSERT INTO projects (id, name, owner_id) VALUES (%s, %s, %s)",
                         (project_id, f"{username}'s project", user_id))
        self.users[username], self.projects[username] = user_id, project_id
        return user_id

    def token(self, username: str) -> str:
        from bench.classic.app import token_for

        return token_for(self.users[username], CLASSIC_SECRET)

    def seed_jobs(self, username: str, count: int) -> list[str]:
        """``count`` pending tts jobs of ``username``, one second apart in ``created_at``."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "INSERT INTO jobs (project_id, type, parameters, created_by_id, created_by_username, created_at, "
                "updated_at) SELECT %s, 'tts', %s::jsonb, %s, %s, now() - make_interval(secs => g), "
                "now() - make_interval(secs => g) FROM generate_series(1, %s) g RETURNING id",
                (self.projects[username], json.dumps({"text": TEXT}), self.users[username], username, count)).fetchall()
            conn.execute("ANALYZE jobs")
        return [str(r[0]) for r in rows]

    def start_celery(self) -> None:
        self.celery = Proc("celery worker", [sys.executable, "-m", "celery", "-A", "bench.classic.tasks", "worker",
                                             "--pool", "solo", "--loglevel", "WARNING", "--without-gossip",
                                             "--without-mingle", "--without-heartbeat"],
                           self.env(), self.tmp / "celery.log")

    def flush_queue(self) -> None:
        import redis

        redis.Redis(port=self.redis_port).flushdb()

    def pids(self) -> dict[str, Any]:
        groups: dict[str, Any] = {}
        if self.api:
            groups["api (uvicorn)"] = lambda: tree_pids(self.api.pid)  # type: ignore[union-attr]
        if self.redis:
            groups["redis"] = lambda: [self.redis.pid]  # type: ignore[union-attr]
        if self.celery:
            groups["celery worker"] = lambda: tree_pids(self.celery.pid)  # type: ignore[union-attr]
        return groups

    def close(self) -> None:
        for proc in (self.celery, self.api, self.redis):
            if proc is not None:
                try:
                    proc.stop()
                except Exception as exc:  # noqa: BLE001 - the clean-up goes on
                    print(f"stopping {proc.name}: {exc}", file=sys.stderr)
        if self.database_name:
            try:
                with psycopg.connect(self.server_url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)')
            except psycopg.Error as exc:
                print(f"dropping {self.database_name}: {exc}", file=sys.stderr)


# -- one measurement -------------------------------------------------------------------------


@dataclass
class Measurement:
    side: str
    target: str
    load: dict[str, Any]
    cpu: dict[str, float]  # seconds per group over the window
    wall: float
    other_cores: float
    side_groups: list[str]

    @property
    def rate(self) -> float:
        return float(self.load["rate"])

    def lat(self, key: str) -> float:
        return float(self.load["latency_ms"][key])

    def side_cpu_ms_per_request(self) -> float:
        """CPU of this side's processes, its database's backends, the server's own processes and
        the client, per counted request."""
        total = sum(self.cpu[g] for g in self.side_groups) + self.load["client_cpu_s"]
        return total * 1000 / self.load["ok"] if self.load["ok"] else float("nan")


def run_client(url: str, method: str, paths: list[str], headers: dict[str, str], body: str, clients: int,
               seconds: float, warmup: float, ok: int, groups: Groups,
               tmp: Path) -> tuple[dict[str, Any], dict[str, float], float, float]:
    """Run :mod:`bench.loadclient` as a process; sample CPU at its measured window's edges.
    Returns ``(load result, CPU s per group, wall s, other cores)``."""
    paths_file = tmp / f"paths-{uuid.uuid4().hex[:6]}.txt"
    paths_file.write_text("\n".join(paths) + "\n")
    argv = [sys.executable, "-m", "bench.loadclient", url, "--method", method, "--paths-file", str(paths_file),
            "--connections", str(clients), "--seconds", str(seconds), "--warmup", str(warmup), "--ok", str(ok),
            "--json", "--markers"]
    for k, v in headers.items():
        argv += ["--header", f"{k}: {v}"]
    if body:
        argv += ["--body", body]
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
    assert proc.stdout is not None
    client_group = {"client": lambda: [proc.pid]}
    all_groups = Groups({**groups.groups, **client_group})
    s0 = s1 = None
    m0 = m1 = (0.0, 0.0)
    t0 = t1 = 0.0
    result: dict[str, Any] | None = None
    for line in proc.stdout:
        line = line.strip()
        if line == "measure":
            s0, m0, t0 = all_groups.sample(), machine_cpu(), time.monotonic()
        elif line == "stop":
            s1, m1, t1 = all_groups.sample(), machine_cpu(), time.monotonic()
        elif line.startswith("{"):
            result = json.loads(line)
    proc.wait()
    paths_file.unlink(missing_ok=True)
    if result is None or s0 is None or s1 is None:
        raise SetupError(f"the load client failed (exit {proc.returncode})")
    used = cpu_used(s0, s1)
    wall = t1 - t0
    ours = sum(used.values())  # both sides, the PostgreSQL server, the client and this process
    other = max(0.0, (m1[0] - m0[0]) - ours) / wall if wall > 0 else float("nan")
    used.pop("client", None)  # the client reports its own window's CPU
    return result, used, wall, other


# -- the run ---------------------------------------------------------------------------------


def count_api_workers(pid: int) -> int:
    """Processes serving aiorch's API: 1 for a lone process, else its uvicorn workers (the
    parent's children run by multiprocessing's ``spawn_main``; its resource tracker is not one)."""
    workers = 0
    for child in tree_pids(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        workers += "spawn_main" in cmdline
    return workers or 1


def seed_aiorch(bench: BenchSystem, username: str, project: str, count: int) -> None:
    """``count`` tts jobs of ``username`` through the write side (4 threads), then wait for the read model."""
    from commands.messages import SubmitJob

    ctx = bench.actor_context(username)
    command = SubmitJob(uuid.UUID(project), "tts", {"text": TEXT})
    per = [count // 4 + (1 if i < count % 4 else 0) for i in range(4)]

    def work(n: int) -> None:
        for _ in range(n):
            bench.sys.platform.submit_job(command, ctx)

    threads = [threading.Thread(target=work, args=(n,)) for n in per]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    bench.wait_projected(bench.max_position(), 120)


def aiorch_job_ids(bench: BenchSystem, user_id: str) -> list[str]:
    from sqlalchemy import select

    from projections import tables as t

    with bench.sys.engine.connect() as conn:
        return [str(r[0]) for r in conn.execute(select(t.jobs.c.id).where(t.jobs.c.created_by_id == user_id))]


def fmt(x: float, digits: int = 1) -> str:
    return "n/a" if x != x else f"{x:,.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of A, B per target (default 3; median)")
    parser.add_argument("--clients", type=int, default=8, help="connections of the load client (default 8)")
    parser.add_argument("--api-workers", type=int, default=0,
                        help="aiorch's API worker processes (aiorch api --workers; default: as aiorch up, the core count)")
    parser.add_argument("--workers", type=int, default=0,
                        help="classic uvicorn workers (default: as many as aiorch's API processes)")
    parser.add_argument("--seed-jobs", type=int, default=1000, help="the reader's jobs on each side (default 1,000)")
    parser.add_argument("--targets", default="post,get,list", help="comma-separated: post,get,list")
    parser.add_argument("--e2e-seconds", type=float, default=5.0,
                        help="classic POST → running phase with a Celery worker, 1 client (0: skip; default 5)")
    parser.add_argument("--e2e-rate", type=float, default=20.0,
                        help="POSTs per second of that phase, paced so that the worker is idle (default 20)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write a summary for bench/targets.py")
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]

    other_before = warn_if_busy(2.0)
    from infra.apiserver import default_workers

    api_workers = args.api_workers or default_workers()
    with BenchSystem(api=True, projector=True, relay=True, api_workers=api_workers) as bench:  # aiorch up --processors 0
        api_pid = bench.pids()["api"]
        aiorch_workers = count_api_workers(api_pid)
        classic = Classic(bench.server_url, args.workers or aiorch_workers, bench.tmp)
        try:
            classic.start()
            return _run(args, targets, bench, classic, aiorch_workers, other_before)
        finally:
            classic.close()


def _run(args: argparse.Namespace, targets: list[str], bench: BenchSystem, classic: Classic, aiorch_workers: int,
         other_before: float) -> int:
    api_pid = bench.pids()["api"]
    workers = classic.workers
    postmaster = bench.postmaster

    # users: a writer (POSTs) and a reader (GETs over a fixed number of jobs) on each side
    a_users = {name: bench.create_user(f"bench-{name}") for name in ("writer", "reader")}
    a_projects = {name: bench.create_project(f"bench-{name}") for name in a_users}
    for name in ("writer", "reader"):
        classic.create_user(f"bench-{name}")
    say(f"seeding {args.seed_jobs} jobs of the reader on each side")
    seed_aiorch(bench, "bench-reader", a_projects["reader"], args.seed_jobs)
    a_ids = aiorch_job_ids(bench, a_users["reader"])
    c_ids = classic.seed_jobs("bench-reader", args.seed_jobs)
    if len(a_ids) != len(c_ids):
        raise SetupError(f"seeded {len(a_ids)} aiorch jobs and {len(c_ids)} classic jobs")

    def a_groups() -> dict[str, Any]:
        return {"api": lambda: tree_pids(api_pid), "projector": lambda: [bench.pids()["projector"]],
                "relay": lambda: [bench.pids()["relay"]], "broker": lambda: [bench.broker_proc.pid],
                "postgres (aiorch db)": lambda: pg_pids(postmaster, bench.database_name)[0]}

    def c_groups() -> dict[str, Any]:
        return {**classic.pids(), "postgres (classic db)": lambda: pg_pids(postmaster, classic.database_name)[0]}

    groups = Groups({**{f"aiorch {k}": v for k, v in a_groups().items()},
                     **{f"classic {k}": v for k, v in c_groups().items()},
                     "postgres server processes": lambda: pg_pids(postmaster, "")[1],
                     "bench (this process)": lambda: [os.getpid()]})
    side_groups = {
        "aiorch": [f"aiorch {k}" for k in a_groups()] + ["postgres server processes"],
        "classic": [f"classic {k}" for k in c_groups()] + ["postgres server processes"],
    }

    def aiorch_token(username: str) -> str:
        http = bench.login(username)
        token = str(http.headers["Authorization"])
        http.close()
        return token

    def spec(side: str, target: str) -> tuple[str, str, list[str], dict[str, str], str, int]:
        if side == "aiorch":
            url, ids = bench.api_url, a_ids
            token = aiorch_token("bench-writer" if target == "post" else "bench-reader")
            project = a_projects["writer"]
        else:
            url, ids = classic.api_url, c_ids
            token = "Bearer " + classic.token("bench-writer" if target == "post" else "bench-reader")
            project = classic.projects["bench-writer"]
        headers = {"Authorization": token, "Accept": "application/json"}
        if target == "post":
            body = json.dumps({"project": project, "type": "tts", "parameters": {"text": TEXT}})
            return url, "POST", ["/api/jobs/"], {**headers, "Content-Type": "application/json"}, body, 201
        if target == "get":
            return url, "GET", [f"/api/jobs/{i}/" for i in ids], headers, "", 200
        return url, "GET", ["/api/jobs/?page_size=50"], headers, "", 200

    # sanity: each request answers as expected once, on each side
    for side in ("aiorch", "classic"):
        for target in targets:
            url, method, paths, headers, body, ok = spec(side, target)
            resp = httpx.request(method, url + paths[0], headers=headers, content=body or None, timeout=30)
            if resp.status_code != ok:
                raise SetupError(f"{side} {method} {paths[0]}: {resp.status_code} {resp.text[:300]}")
            if target == "list" and len(resp.json()["results"]) != 50:
                raise SetupError(f"{side} list: {len(resp.json()['results'])} rows, not 50")

    say(f"aiorch API processes: {aiorch_workers}; classic uvicorn workers: {workers}; "
        f"{args.clients} clients, {args.warmup:g} s warm-up + {args.seconds:g} s, {args.rounds} round(s)")
    results: list[Measurement] = []
    for rnd in range(args.rounds):
        for target in targets:
            for side in ("aiorch", "classic"):
                url, method, paths, headers, body, ok = spec(side, target)
                load, cpu, wall, other = run_client(url, method, paths, headers, body, args.clients, args.seconds,
                                                    args.warmup, ok, groups, bench.tmp)
                m = Measurement(side, target, load, cpu, wall, other, side_groups[side])
                results.append(m)
                errors = load["requests"] - load["ok"]
                say(f"round {rnd + 1} {target:4s} {side:7s} {m.rate:8.1f}/s  p50 {m.lat('p50'):6.1f}  "
                    f"p99 {m.lat('p99'):6.1f} ms  errors {errors}{' ' + str(load['statuses']) if errors else ''}  "
                    f"side CPU {m.side_cpu_ms_per_request():.2f} ms/req  other {other:.2f} cores")
                bench.check_roles()
                classic.api.check()  # type: ignore[union-attr]
            if target == "post":  # let aiorch's projector and relay drain before the next run
                bench.wait_projected(bench.max_position(), 120)

    e2e = run_e2e(classic, args) if args.e2e_seconds > 0 else None
    entries = report(args, targets, results, side_groups, aiorch_workers, workers, other_before, e2e)
    others = [m.other_cores for m in results]
    cpu_runs: dict[str, Any] = {
        f"{m.target} {m.side} round {i // (2 * len(targets)) + 1}": {
            "side_cpu_ms_per_request": m.side_cpu_ms_per_request(), "other_cores": m.other_cores}
        for i, m in enumerate(results)}
    write_summary(args.json, "compare.py", entries, statistics.median(others) if others else None, cpu_runs,
                  other_before=other_before, other_cores_range=[min(others, default=0.0), max(others, default=0.0)],
                  e2e=e2e, aiorch_api_processes=aiorch_workers, classic_workers=workers)
    return 0


def run_e2e(classic: Classic, args: argparse.Namespace) -> dict[str, Any]:
    """Classic POST → running: a Celery worker, one client posting ``--e2e-rate`` times a second
    (an idle worker, as target 7 asks); the rows' ``started_at − created_at`` (database clock)."""
    from bench.loadclient import encode, run_load

    classic.flush_queue()  # the tasks queued by the POST runs (no worker ran) are dropped
    classic.create_user("bench-e2e")
    classic.start_celery()
    time.sleep(3.0)
    assert classic.celery is not None
    classic.celery.check()
    body = json.dumps({"project": classic.projects["bench-e2e"], "type": "tts", "parameters": {"text": TEXT}}).encode()
    headers = {"Authorization": "Bearer " + classic.token("bench-e2e"), "Content-Type": "application/json"}
    say(f"classic end to end: Celery worker (solo pool) pid {classic.celery.pid}, 1 client, {args.e2e_rate:g} POST/s, "
        f"{args.e2e_seconds:g} s")
    load = run_load(classic.api_url, [encode("POST", "/api/jobs/", headers, body)], connections=1,
                    seconds=args.e2e_seconds, warmup=1.0, ok_statuses=[201], interval=1.0 / args.e2e_rate)
    deadline = time.monotonic() + 30
    with psycopg.connect(classic.database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            left = conn.execute("SELECT count(*) FROM jobs WHERE created_by_id = %s AND status <> 'completed'",
                                (classic.users["bench-e2e"],)).fetchone()
            if left and left[0] == 0:
                break
            time.sleep(0.2)
        rows = conn.execute(
            "SELECT extract(epoch FROM started_at - created_at) * 1000, extract(epoch FROM finished_at - created_at) * 1000 "
            "FROM jobs WHERE created_by_id = %s AND started_at IS NOT NULL AND created_at >= to_timestamp(%s)",
            (classic.users["bench-e2e"], load.window[0])).fetchall()
    classic.celery.stop()
    return {"posts": load.ok, "rate": load.rate, "post_p50": load.latency_ms["p50"],
            "running": summary([float(r[0]) for r in rows]), "completed": summary([float(r[1]) for r in rows])}


def report(args: argparse.Namespace, targets: list[str], results: list[Measurement], side_groups: dict[str, list[str]],
           aiorch_workers: int, workers: int, other_before: float, e2e: dict[str, Any] | None) -> list[dict[str, Any]]:
    def med(side: str, target: str, fn: Any) -> float:
        values = [fn(m) for m in results if m.side == side and m.target == target]
        return statistics.median(values) if values else float("nan")

    names = {"post": "POST /api/jobs/", "get": "GET /api/jobs/{id}/", "list": "GET /api/jobs/?page_size=50"}
    print()
    print(f"aiorch vs classic stack — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, other processes before the run "
          f"{other_before:.2f} cores")
    print(f"  {args.clients} connections, {args.warmup:g} s warm-up + {args.seconds:g} s per run, {args.rounds} round(s) "
          f"interleaved, median; aiorch API processes {aiorch_workers}, classic uvicorn workers {workers}")
    print()
    print(f"  {'target':30s} {'side':8s} {'rate/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>7s} "
          f"{'CPU ms/req':>10s} {'other cores':>11s}")
    for target in targets:
        for side in ("aiorch", "classic"):
            errors = med(side, target, lambda m: m.load["requests"] - m.load["ok"])
            print(f"  {names[target]:30s} {side:8s} {fmt(med(side, target, lambda m: m.rate)):>9s} "
                  f"{fmt(med(side, target, lambda m: m.lat('p50'))):>8s} {fmt(med(side, target, lambda m: m.lat('p99'))):>8s} "
                  f"{errors:7.0f} {fmt(med(side, target, Measurement.side_cpu_ms_per_request), 2):>10s} "
                  f"{fmt(med(side, target, lambda m: m.other_cores), 2):>11s}")
    print("  (CPU ms/req: the side's processes + its database's backends + PostgreSQL's own processes + the client)")
    print()
    print("  targets (issue 10):")
    entries: list[dict[str, Any]] = []

    def details(target: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for side in ("aiorch", "classic"):
            out[side] = {"rate": med(side, target, lambda m: m.rate), "p50_ms": med(side, target, lambda m: m.lat("p50")),
                         "p99_ms": med(side, target, lambda m: m.lat("p99")),
                         "errors": med(side, target, lambda m: m.load["requests"] - m.load["ok"]),
                         "cpu_ms_per_request": med(side, target, Measurement.side_cpu_ms_per_request),
                         "other_cores": med(side, target, lambda m: m.other_cores)}
        out["rounds"] = args.rounds
        return out

    ratios: dict[str, float] = {}
    for target in targets:
        ratios[target] = med("aiorch", target, lambda m: m.rate) / med("classic", target, lambda m: m.rate)
    if "post" in targets:
        p99a, p99c = med("aiorch", "post", lambda m: m.lat("p99")), med("classic", "post", lambda m: m.lat("p99"))
        met = ratios["post"] >= 1.0 and p99a <= p99c
        print(f"    1. POST rate aiorch/classic {ratios['post']:.3f}× (≥ 1.0), p99 {p99a:.1f} vs {p99c:.1f} ms "
              f"(≤ classic): {'MET' if met else 'NOT MET'}")
        rate_a, rate_c = med("aiorch", "post", lambda m: m.rate), med("classic", "post", lambda m: m.rate)
        entries.append(target_entry(1, "POST /api/jobs/ rate", rate_a, "/s", "≥ 1.0× classic", ratios["post"] >= 1.0,
                                    comparator=rate_c, comparator_name="classic POST", ratio=ratios["post"],
                                    details=details("post")))
        entries.append(target_entry(1, "POST /api/jobs/ p99", p99a, "ms", "≤ classic p99", p99a <= p99c,
                                    comparator=p99c, comparator_name="classic POST p99", ratio=p99a / p99c if p99c else None))
    if "get" in targets:
        print(f"    2. GET by id aiorch/classic {ratios['get']:.3f}× (≥ 1.0): {'MET' if ratios['get'] >= 1.0 else 'NOT MET'}")
        entries.append(target_entry(2, "GET /api/jobs/{id}/ rate", med("aiorch", "get", lambda m: m.rate), "/s",
                                    "≥ 1.0× classic", ratios["get"] >= 1.0, comparator=med("classic", "get", lambda m: m.rate),
                                    comparator_name="classic GET", ratio=ratios["get"], details=details("get")))
    if "list" in targets:
        print(f"    2. list of 50 aiorch/classic {ratios['list']:.3f}× (≥ 0.5): "
              f"{'MET' if ratios['list'] >= 0.5 else 'NOT MET'}")
        entries.append(target_entry(2, "GET /api/jobs/?page_size=50 rate", med("aiorch", "list", lambda m: m.rate), "/s",
                                    "≥ 0.5× classic", ratios["list"] >= 0.5, comparator=med("classic", "list", lambda m: m.rate),
                                    comparator_name="classic list of 50", ratio=ratios["list"], details=details("list")))
    print()
    print("  CPU per role, median over rounds: ms per request (cores)")
    for target in targets:
        for side in ("aiorch", "classic"):
            runs = [m for m in results if m.side == side and m.target == target]
            parts = []
            for g in [*side_groups[side], "client"]:
                def per(m: Measurement, g: str = g) -> float:
                    s = m.load["client_cpu_s"] if g == "client" else m.cpu[g]
                    return s * 1000 / m.load["ok"] if m.load["ok"] else float("nan")

                def cores(m: Measurement, g: str = g) -> float:
                    s = m.load["client_cpu_s"] if g == "client" else m.cpu[g]
                    return s / m.wall

                label = g.removeprefix(f"{side} ")
                parts.append(f"{label} {statistics.median(map(per, runs)):.2f} ({statistics.median(map(cores, runs)):.2f})")
            peer = "classic" if side == "aiorch" else "aiorch"
            idle = statistics.median(sum(m.cpu[g] for g in side_groups[peer] if g != "postgres server processes") / m.wall
                                     for m in runs)
            other = statistics.median(m.other_cores for m in runs)
            print(f"    {names[target]:28s} {side:8s} " + ", ".join(parts) +
                  f"; idle {peer} {idle:.2f} cores; other processes {other:.2f} cores")
    if e2e is not None:
        r, c = e2e["running"], e2e["completed"]
        print()
        print(f"  classic end to end (Celery worker, solo pool; 1 client paced at {e2e['rate']:.0f} POST/s, POST p50 "
              f"{e2e['post_p50']:.1f} ms): POST → running p50 {r['p50']:.1f} / p99 {r['p99']:.1f} ms, "
              f"→ completed p50 {c['p50']:.1f} / p99 {c['p99']:.1f} ms over {r['n']} jobs (database clock)")
        print("  (target 7's comparator; aiorch's JobSubmitted → JobStarted needs a processor and is not measured here)")
    return entries


if __name__ == "__main__":
    run_main(main)
