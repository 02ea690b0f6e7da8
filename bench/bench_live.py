"""Event-to-WebSocket latency while commands append events at a steady ``--rate``.

Two scenarios (``--scenario``):

- ``issue`` (default; issue 10, target 4): ``--editors`` (100) editors with ``--per-editor``
  (10) WebSocket connections each on ``/ws/jobs/`` (an editor sees only its own jobs, so each
  of its connections receives only the events of its ``--jobs-per-editor`` (2) running jobs)
  plus ``--admins`` (5) admins on ``/ws/events/`` (every event); ``--rate`` 500 events/s
  spread round-robin over the editors' jobs. Each event is due to its editor's 10
  connections and to the 5 admins. Reported against the goals: event → message p99 ≤ 100
  ms, no ``resync_required``, API CPU per delivered message ≤ 0.03 ms. The script raises its
  open-file limit (RLIMIT_NOFILE, inherited by the API and client processes) to the hard
  limit; if the sockets still do not fit, it runs the largest number of editors that does
  and says so. Deliveries of another editor's job ("foreign") are counted (must be 0).
- ``viewer`` (the earlier one): ``--clients`` (200) clients on ``/ws/jobs/`` all logged in
  as one viewer (``--as admin`` for an admin), so every client receives every event over
  ``--jobs`` (200) running jobs of one editor, at ``--rate`` 200 events/s.

Set-up: a fresh database, the API (``python -m infra.cli api``, uvicorn) and the projector
(``python -m infra.cli projector``) each in their own process (through :mod:`bench.role`).
The clients run in ``--client-procs`` (default 2) child processes, one asyncio loop
(uvloop when installed) each, using the ``websockets`` library; they authenticate with a
first message ``{"type": "auth", "token": access}`` (``--auth ticket``: ``POST
/api/ws-ticket/`` then ``?ticket=``). ``--no-compression`` turns permessage-deflate off (on
by default, as browsers negotiate it).

Load: writer threads (``--writers``, default 4) in this process send
``platform.update_progress(UpdateProgress(...))`` through the write side as processors do
(one JobProgressed event each, round-robin over the jobs) on an open-loop schedule: command
``i`` is due at ``t0 + i / rate``. The time the command returned (its commit) is recorded
per position.

Measure: each client notes ``time.monotonic()`` (one clock for every process on Linux)
when a message arrives and reads its ``position``; latency = receive time − commit time of
that position, over every (client, event) delivery after a warm-up. Also: per event, the
first and the last client's delivery (fan-out spread), deliveries missing, clients the
server closed (``resync_required`` when a client's queue of 1,000 overflowed), CPU per
process, and the load average at start and end.

``--profile api`` (or ``api,projector``) runs those roles under cProfile and prints their
top functions (slower: use it to see where time goes, not for the figures).

    /work/venv/bin/python bench/bench_live.py [--editors 100 --per-editor 10 --admins 5] [--rate 500] [--seconds 20]
    /work/venv/bin/python bench/bench_live.py --scenario viewer [--clients 200] [--rate 200] [--client-procs 2]

``--json PATH`` writes target 4's figures for :mod:`bench.targets`.

Exits 0 whether or not the run kept up; 2 when the services could not be set up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import sys
import threading
import time
import uuid
from array import array
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    BenchSystem,
    CpuMeter,
    SetupError,
    print_profile,
    run_main,
    say,
    summary,
    target_entry,
    warn_if_busy,
    write_summary,
)

GOAL_P99_MS, GOAL_API_MS_PER_MESSAGE = 100.0, 0.03  # issue 10, target 4

POSITION_KEY = '"position": '


# -- clients (in child processes) -----------------------------------------------------------------


class Conn:
    """What one WebSocket client saw."""

    def __init__(self) -> None:
        self.positions = array("q")
        self.times = array("d")
        self.other = 0
        self.close_code: int | None = None
        self.resync = False
        self.error = ""


async def _client(
    url: str, auth: dict[str, Any] | None, compression: str | None, conn: Conn, connected: list[int], gate: asyncio.Semaphore
) -> None:
    import websockets

    async with gate:
        try:
            ws = await websockets.connect(
                url, compression=compression, max_size=None, open_timeout=60, ping_interval=None, close_timeout=1, max_queue=None
            )
        except Exception as exc:  # noqa: BLE001 - reported
            conn.error = f"connect: {type(exc).__name__}: {exc}"
            return
        if auth is not None:
            await ws.send(json.dumps(auth))
        connected[0] += 1
    positions, times = conn.positions, conn.times
    monotonic = time.monotonic
    try:
        async for message in ws:
            now = monotonic()
            if isinstance(message, bytes):
                message = message.decode()
            i = message.find(POSITION_KEY)
            if i < 0:
                conn.other += 1  # ping
                continue
            if message.startswith('{"type": "resync_required"'):
                conn.resync = True
                continue
            j = i + len(POSITION_KEY)
            k = message.find(",", j)
            positions.append(int(message[j:k]))
            times.append(now)
    except Exception as exc:  # noqa: BLE001 - reported
        conn.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        conn.close_code = ws.close_code


def client_process(base_ws: str, auths: list[dict[str, Any] | None], urls: list[str], compression: str | None, pipe: Any) -> None:
    """Entry point of a client process: connect every client, report ready, receive until
    told to stop, send back what each client saw."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def run() -> list[Conn]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        gate = asyncio.Semaphore(20)
        connected = [0]
        conns = [Conn() for _ in urls]

        def on_pipe() -> None:  # "status" → (each client's last position, -1 when gone; deliveries); "stop"
            request = pipe.recv()
            if request == "status":
                lasts = [-1 if c.error or c.close_code is not None else (c.positions[-1] if c.positions else 0) for c in conns]
                pipe.send(("status", lasts, sum(len(c.positions) for c in conns)))
            else:
                stop.set()

        tasks = [
            asyncio.create_task(_client(u, a, compression, c, connected, gate))
            for u, a, c in zip(urls, auths, conns, strict=True)
        ]
        deadline = loop.time() + 90
        while connected[0] + sum(1 for c in conns if c.error) < len(urls) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        pipe.send(("ready", connected[0], [c.error for c in conns if c.error][:3]))
        loop.add_reader(pipe.fileno(), on_pipe)
        await stop.wait()
        loop.remove_reader(pipe.fileno())
        os.set_blocking(pipe.fileno(), True)  # the event loop made it non-blocking
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return conns

    conns = asyncio.run(run())
    pipe.send(("done", [(c.positions.tobytes(), c.times.tobytes(), c.other, c.close_code, c.resync, c.error) for c in conns]))
    pipe.close()


# -- load (this process) --------------------------------------------------------------------------


class Writers:
    """``--writers`` threads sending UpdateProgress commands on an open-loop schedule; records
    ``(index, returned monotonic time, position)``."""

    def __init__(self, bench: BenchSystem, jobs: list[uuid.UUID], rate: float, total: int, threads: int) -> None:
        from commands.context import Actor, Context
        from commands.messages import UpdateProgress

        self.platform = bench.sys.platform
        self.ctx = Context(Actor(id="bench-processor", username=None, role="processor"), "bench-live")
        self.UpdateProgress = UpdateProgress
        self.jobs, self.rate, self.total = jobs, rate, total
        self.progress = dict.fromkeys(jobs, 0)
        self.lock = threading.Lock()
        self.next = 0
        self.records: list[tuple[int, float, int]] = []
        self.errors: list[str] = []
        self.late = 0
        self.t0 = time.monotonic() + 0.2
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> None:
        for th in self.threads:
            th.start()

    def alive(self) -> bool:
        return any(th.is_alive() for th in self.threads)

    def _run(self) -> None:
        interval = 1.0 / self.rate
        while True:
            with self.lock:
                i = self.next
                self.next += 1
            if i >= self.total:
                return
            due = self.t0 + i * interval
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > interval:
                self.late += 1
            job = self.jobs[i % len(self.jobs)]
            self.progress[job] = min(100, self.progress[job] + 1)
            try:
                position = self.platform.update_progress(self.UpdateProgress(job, self.progress[job], f"step {i}"), self.ctx)
            except Exception as exc:  # noqa: BLE001 - counted, the run goes on
                self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            returned = time.monotonic()
            with self.lock:
                self.records.append((i, returned, int(position)))


def start_jobs(bench: BenchSystem, project: str, n: int, owner: str = "bench-editor") -> list[uuid.UUID]:
    """Submit and start ``n`` jobs of ``owner`` (2 events each); returns their ids."""
    from commands.context import Actor, Context
    from commands.messages import StartJob, SubmitJob

    platform = bench.sys.platform
    editor = bench.actor_context(owner)
    processor = Context(Actor(id="bench-processor", username=None, role="processor"), "bench-live-setup")
    submit = SubmitJob(uuid.UUID(project), "tts", {"text": "Live benchmark sentence."})
    jobs = []
    for _ in range(n):
        job_id, _ = platform.submit_job(submit, editor)
        platform.start_job(StartJob(job_id, platform.get_job(job_id).version, "bench-processor"), processor)
        jobs.append(job_id)
    return jobs


def raise_nofile() -> tuple[int, int]:
    """Raise this process's soft open-file limit to the hard one (children inherit it);
    returns ``(soft, hard)`` after."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class Client:
    """One WebSocket client to open: its URL, first message, and whose events it gets
    (``owner`` an editor's index, or -1 for every event)."""

    def __init__(self, url: str, auth: dict[str, Any] | None, owner: int) -> None:
        self.url, self.auth, self.owner = url, auth, owner


def token_of(bench: BenchSystem, username: str) -> str:
    """An access token of ``username`` (logs in over the API)."""
    http = bench.login(username)
    try:
        return str(http.headers["Authorization"]).split(" ", 1)[1]
    finally:
        http.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("issue", "viewer"), default="issue", help="see the module docstring")
    parser.add_argument("--editors", type=int, default=100, help="issue: editors (default 100)")
    parser.add_argument("--per-editor", type=int, default=10, help="issue: /ws/jobs/ connections per editor (default 10)")
    parser.add_argument("--admins", type=int, default=5, help="issue: admins on /ws/events/ (default 5)")
    parser.add_argument("--jobs-per-editor", type=int, default=2, help="issue: running jobs per editor (default 2)")
    parser.add_argument("--clients", type=int, default=200, help="viewer: WebSocket clients (default 200)")
    parser.add_argument("--rate", type=float, default=0.0, help="events per second (default: issue 500, viewer 200)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (default 3)")
    parser.add_argument(
        "--drain", type=float, default=30.0, help="max seconds after the last commit to wait for deliveries (default 30)"
    )
    parser.add_argument("--jobs", type=int, default=200, help="viewer: running jobs the progress commands cycle over")
    parser.add_argument("--writers", type=int, default=0, help="writer threads (default: issue 16, viewer 4)")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--as", dest="role", choices=("viewer", "admin"), default="viewer", help="viewer: the clients' role")
    parser.add_argument("--auth", choices=("token", "ticket"), default="token")
    parser.add_argument("--no-compression", action="store_true", help="no permessage-deflate")
    parser.add_argument("--relay", action="store_true", help="also run the outbox relay (off by default)")
    parser.add_argument("--profile", default="", metavar="ROLES", help="roles (api,projector) under cProfile")
    parser.add_argument("--profile-dir", type=Path, default=Path("/tmp/aiorch-bench-profiles"))  # noqa: S108
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write a summary for bench/targets.py")
    args = parser.parse_args()
    issue = args.scenario == "issue"
    rate = args.rate or (500.0 if issue else 200.0)
    args.writers = args.writers or (16 if issue else 4)
    profile = [r.strip() for r in args.profile.split(",") if r.strip()]
    if profile:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    spawn = mp.get_context("spawn")  # no fork of a process with threads and pools

    soft, hard = raise_nofile()
    editors = args.editors
    sockets = editors * args.per_editor + args.admins if issue else args.clients
    size_note = ""
    n_procs = max(1, min(args.client_procs, sockets))
    # the API holds every socket plus ~200 files; a client process its share plus ~100
    while issue and editors > 1 and max(sockets + 200, sockets // n_procs + 100) > soft:
        editors -= 1
        sockets = editors * args.per_editor + args.admins
    if issue and editors < args.editors:
        size_note = (f"open-file limit {soft} (hard {hard}) fits {editors} editors × {args.per_editor} + {args.admins}, "
                     f"not {args.editors}")
        say(f"NOTE: {size_note}")
    load0 = os.getloadavg()
    say(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} ({os.cpu_count()} cores); "
        f"open-file limit {soft} (hard {hard})")
    other_before = warn_if_busy()
    with BenchSystem(api=True, projector=True, relay=args.relay, profile=profile, profile_dir=args.profile_dir) as bench:
        ws_root = bench.api_url.replace("http://", "ws://")
        clients: list[Client] = []
        jobs: list[uuid.UUID] = []
        owner_of_job: dict[uuid.UUID, int] = {}
        if issue:
            per_editor_jobs: list[list[uuid.UUID]] = []
            for e in range(editors):
                name = f"bench-editor-{e}"
                bench.create_user(name, "editor")
                project = bench.create_project(name, f"project {e}")
                per_editor_jobs.append(start_jobs(bench, project, args.jobs_per_editor, name))
                for job in per_editor_jobs[-1]:
                    owner_of_job[job] = e
            for a in range(args.admins):
                bench.create_user(f"bench-admin-{a}", "admin")
            # round-robin over editors first, so consecutive events go to different editors
            jobs = [per_editor_jobs[e][k] for k in range(args.jobs_per_editor) for e in range(editors)]
            say(f"{len(jobs)} running jobs of {editors} editors; logging in {editors} editors and {args.admins} admins")
            for e in range(editors):
                token = token_of(bench, f"bench-editor-{e}")
                clients += [Client(f"{ws_root}/ws/jobs/", {"type": "auth", "token": token}, e)] * args.per_editor
            for a in range(args.admins):
                admin_token = token_of(bench, f"bench-admin-{a}")
                clients.append(Client(f"{ws_root}/ws/events/", {"type": "auth", "token": admin_token}, -1))
            what = (f"{editors} editors × {args.per_editor} on /ws/jobs/ + {args.admins} admins on /ws/events/ "
                    f"({len(clients)} sockets)")
        else:
            bench.create_user("bench-editor", "editor")
            bench.create_user("bench-watcher", args.role)
            project = bench.create_project("bench-editor")
            jobs = start_jobs(bench, project, args.jobs)
            owner_of_job = dict.fromkeys(jobs, 0)
            say(f"{len(jobs)} running jobs")
            http = bench.login("bench-watcher")  # waits until the read models have everything
            token = http.headers["Authorization"].split(" ", 1)[1]
            ws_base = f"{ws_root}/ws/jobs/"
            for _ in range(args.clients):
                if args.auth == "ticket":
                    resp = http.post("/api/ws-ticket/")
                    if resp.status_code != 201:
                        raise SetupError(f"POST /api/ws-ticket/: {resp.status_code} {resp.text[:200]}")
                    clients.append(Client(f"{ws_base}?ticket={resp.json()['ticket']}", None, -1))
                else:
                    clients.append(Client(ws_base, {"type": "auth", "token": token}, -1))
            http.close()
            what = f"{len(clients)} clients on /ws/jobs/ as one {args.role}"
        compression = None if args.no_compression else "deflate"

        procs, pipes, order = [], [], []
        n_procs = max(1, min(args.client_procs, len(clients)))
        for p in range(n_procs):
            mine = list(range(p, len(clients), n_procs))
            order.append(mine)
            parent, child = spawn.Pipe()
            proc = spawn.Process(
                target=client_process,
                daemon=True,
                args=(ws_root, [clients[i].auth for i in mine], [clients[i].url for i in mine], compression, child),
            )
            proc.start()
            procs.append(proc)
            pipes.append(parent)
        connected = 0
        for p, pipe in enumerate(pipes):
            if not pipe.poll(180):
                raise SetupError(f"client process {p} did not connect its clients within 180 s")
            _tag, n, errors = pipe.recv()
            connected += n
            if errors:
                say(f"  client process {p}: {errors}")
        if connected < len(clients):
            raise SetupError(f"only {connected} of {len(clients)} clients connected")
        say(f"{connected} WebSocket clients connected: {what}, from {n_procs} processes "
            f"(auth {args.auth}, compression {'off' if compression is None else 'deflate'})")

        total = int((args.warmup + args.seconds) * rate)
        warm = int(args.warmup * rate)
        pids = {**bench.pids(), **{f"clients-{i}": int(proc.pid or 0) for i, proc in enumerate(procs)}}
        meter = CpuMeter(pids, bench.postgres_ids())
        writers = Writers(bench, jobs, rate, total, args.writers)
        say(
            f"UpdateProgress at {rate:g}/s over {len(jobs)} jobs from {args.writers} writer threads: "
            f"{args.warmup:g} s warm-up, then {args.seconds:g} s measured"
        )
        writers.start()
        measured_from = writers.t0 + args.warmup
        while time.monotonic() < measured_from:
            time.sleep(0.05)
        meter.start()
        while writers.alive():
            time.sleep(5)
            bench.check_roles()
            if writers.alive():
                say(
                    f"  {len(writers.records)} events appended, store at {bench.max_position()}, "
                    f"read models at {bench.projected_position()}"
                )
        last_by_owner: dict[int, int] = {}
        for i, _t, appended in writers.records:
            owner = owner_of_job[jobs[i % len(jobs)]]
            last_by_owner[owner] = max(last_by_owner.get(owner, 0), appended)
        last = max((r[2] for r in writers.records), default=0)
        expected_last = [last if c.owner < 0 or not issue else last_by_owner.get(c.owner, 0) for c in clients]
        bench.wait_projected(last, 60)
        # Drain: until every client has its last event, or --drain seconds.
        drain_until = time.monotonic() + args.drain
        drained = False
        behind_max, delivered_total = 0, 0
        while time.monotonic() < drain_until:
            behind_max, delivered_total, waiting = 0, 0, 0
            for p, pipe in enumerate(pipes):
                pipe.send("status")
                _tag, lasts, count = pipe.recv()
                delivered_total += count
                for i, got in zip(order[p], lasts, strict=True):
                    if got >= 0 and got < expected_last[i]:
                        waiting += 1
                        behind_max = max(behind_max, expected_last[i] - got)
            if not waiting:
                drained = True
                break
            time.sleep(0.2)
        meter.stop()
        push_window = time.monotonic() - writers.t0
        drain_s = time.monotonic() - max((r[1] for r in writers.records), default=time.monotonic())
        say(f"clients {'have every event' if drained else 'still behind'} {drain_s:.1f} s after the last commit")
        for pipe in pipes:
            pipe.send("stop")
        results: list[Any] = [None] * len(clients)
        for p, pipe in enumerate(pipes):
            if not pipe.poll(60):
                raise SetupError(f"client process {p} did not report")
            _tag, conns = pipe.recv()
            for i, conn in zip(order[p], conns, strict=True):
                results[i] = conn
        for proc in procs:
            proc.join(10)
        late = writers.late
        errors = list(writers.errors)
    load1 = os.getloadavg()

    import numpy as np

    records = sorted(writers.records)
    measured = [(t, pos, owner_of_job[jobs[i % len(jobs)]]) for i, t, pos in records if i >= warm]
    commit_pos = np.array([pos for _, pos, _o in measured], dtype=np.int64)
    commit_t = np.array([t for t, _, _o in measured], dtype=np.float64)
    commit_owner = np.array([o for _t, _p, o in measured], dtype=np.int64)
    order_idx = np.argsort(commit_pos)
    commit_pos, commit_t, commit_owner = commit_pos[order_idx], commit_t[order_idx], commit_owner[order_idx]
    n_events = len(commit_pos)
    achieved = n_events / (commit_t.max() - commit_t.min()) if n_events > 1 else 0.0

    lat_all: list[np.ndarray] = []
    first = np.full(n_events, np.inf)
    lastd = np.full(n_events, -np.inf)
    received = np.zeros(n_events, dtype=np.int64)
    expected_per_event = np.zeros(n_events, dtype=np.int64)
    closed = resyncs = foreign = 0
    conn_errors: list[str] = []
    for client, (pos_b, t_b, _other, close_code, resync, error) in zip(clients, results, strict=True):
        wants = np.ones(n_events, dtype=bool) if client.owner < 0 or not issue else commit_owner == client.owner
        expected_per_event += wants
        pos = np.frombuffer(pos_b, dtype=np.int64)
        t = np.frombuffer(t_b, dtype=np.float64)
        idx = np.searchsorted(commit_pos, pos)
        idx_ok = idx < n_events
        match = np.zeros(len(pos), dtype=bool)
        match[idx_ok] = commit_pos[idx[idx_ok]] == pos[idx_ok]
        idx, t = idx[match], t[match]
        foreign += int((~wants[idx]).sum())
        lat = t - commit_t[idx]
        lat_all.append(lat)
        np.minimum.at(first, idx, t)
        np.maximum.at(lastd, idx, t)
        np.add.at(received, idx, 1)
        resyncs += bool(resync)
        if close_code not in (None, 1000, 1001, 1005):
            closed += 1
        if error and "ConnectionClosedOK" not in error and "Cancelled" not in error:
            conn_errors.append(error)
    lat = np.concatenate(lat_all) * 1000 if lat_all else np.array([])
    expected = int(expected_per_event.sum())
    delivered = int(received.sum())
    seen = received > 0
    first_lat = (first[seen] - commit_t[seen]) * 1000
    last_lat = (lastd[seen] - commit_t[seen]) * 1000
    s_all = summary(lat.tolist())
    s_first = summary(first_lat.tolist())
    s_last = summary(last_lat.tolist())

    print()
    print(
        f"event → WebSocket latency  ({what}, UpdateProgress at {rate:g}/s, {args.seconds:g} s measured; API and "
        f"projector as processes{', relay on' if args.relay else ''}; compression {'off' if args.no_compression else 'deflate'})"
    )
    if size_note:
        print(f"  NOTE              {size_note}")
    print(
        f"  events            {n_events} measured at {achieved:.1f}/s ({late} sent > 1 interval late"
        + (f", {len(errors)} failed, e.g. {errors[0]}" if errors else "")
        + ")"
    )
    print(
        f"  deliveries        {delivered:,} of {expected:,} expected "
        f"({100 * delivered / max(expected, 1):.1f} %); {int((received == 0).sum())} events reached no client"
        + (f"; {foreign:,} deliveries of another editor's job (must be 0)" if issue else "")
    )
    print(
        f"  per delivery      p50 {s_all['p50']:.1f}  p90 {s_all['p90']:.1f}  p99 {s_all['p99']:.1f}  "
        f"max {s_all['max']:.1f}  mean {s_all['mean']:.1f} ms (receive − commit)"
    )
    print(f"  first client      p50 {s_first['p50']:.1f}  p99 {s_first['p99']:.1f}  max {s_first['max']:.1f} ms")
    print(
        f"  last client       p50 {s_last['p50']:.1f}  p99 {s_last['p99']:.1f}  max {s_last['max']:.1f} ms "
        f"(fan-out to every client done)"
    )
    print(
        f"  server closes     {closed} clients closed by the server ({resyncs} with resync_required: "
        f"queue overflow)" + (f"; errors e.g. {conn_errors[0]}" if conn_errors else "")
    )
    print(
        f"  drain             {'every client had its last event' if drained else 'clients still behind'} "
        f"{drain_s:.1f} s after the last commit (deliveries after that count as missing)"
    )
    print(
        f"  push throughput   {delivered_total:,} messages received in all since the load started "
        f"({delivered_total / push_window:,.0f}/s over {push_window:.0f} s); slowest client "
        f"{behind_max:,} positions behind its last event"
    )
    print("  CPU during the measured run and the drain:")
    for line in meter.report(delivered):
        print(f"    {line}")
    print(
        f"  load average      start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; "
        f"end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} ({os.cpu_count()} cores)"
    )
    kept_up = bool(expected and delivered >= 0.999 * expected and resyncs == 0 and achieved >= 0.95 * rate
                   and s_all["p99"] < 1000)
    print(
        f"  kept up with {rate:g} events/s ({what}; every delivery, none resynced, "
        f"p99 < 1 s, so no growing backlog): {'YES' if kept_up else 'NO'}"
    )
    cpu = meter.as_dict(delivered)
    api_ms = cpu.get("api", {}).get("ms_per_op")
    complete = bool(expected) and delivered >= 0.999 * expected and achieved >= 0.95 * rate
    p99 = s_all["p99"] if delivered else None
    details = {"scenario": args.scenario, "sockets": len(clients), "editors": editors if issue else None,
               "size_note": size_note or None, "rate_asked": rate, "rate": achieved, "events": n_events,
               "delivered": delivered, "expected": expected, "foreign": foreign, "p50_ms": s_all["p50"],
               "max_ms": s_all["max"], "drained": drained, "drain_s": drain_s, "closed": closed,
               "errors": conn_errors[:3]}
    suffix = "" if complete else " (incomplete: see details)"
    entries = [
        target_entry(4, f"live: event → message p99, {len(clients)} sockets at {rate:g}/s{suffix}", p99, "ms",
                     f"p99 ≤ {GOAL_P99_MS:g} ms", complete and p99 is not None and p99 <= GOAL_P99_MS, details=details),
        target_entry(4, "live: clients told resync_required", float(resyncs), "clients", "0", resyncs == 0 and closed == 0),
        target_entry(4, "live: API CPU per delivered message", api_ms, "ms", f"≤ {GOAL_API_MS_PER_MESSAGE:g} ms",
                     api_ms is not None and api_ms <= GOAL_API_MS_PER_MESSAGE,
                     details={"api_cores": cpu.get("api", {}).get("cores")}),
    ]
    write_summary(args.json, "bench_live.py", entries, meter.other_cores(), cpu, other_before=other_before)
    for role in profile:
        print_profile(args.profile_dir / f"{role}.prof")
    return 0


if __name__ == "__main__":
    run_main(main)
