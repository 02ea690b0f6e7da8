"""Event-to-read-model lag at a steady event rate (default 200 events/s).

Writer threads (``--writers``, default 4) send real commands straight to the write side on
a fixed schedule (open loop: command ``i`` is due at ``t0 + i / rate`` whatever happened to
the ones before, so a slow command does not lower the offered rate):

- ``--command submit`` (default): ``platform.submit_job(SubmitJob(...))``, one JobSubmitted
  event each;
- ``--command progress``: ``platform.update_progress(...)`` round-robin over ``--jobs``
  (default 200) running jobs, one JobProgressed event each (loads the job from the store).

Each command returns the position (notification id) of its event once committed; the time
it returned is taken as the commit time. A watcher process polls the projector's tracking row
(``projection_tracking``, the serving read-model generation's row) every ``--poll-ms``
(default 2 ms) on its own connection and notes when the position changes. An event's lag is
the first time the tracking position was seen ≥ its position, minus its commit time (the
polling adds up to ``--poll-ms`` plus one query).

Prints the achieved event rate, command (append) latency, lag p50/p90/p99/max (ms), CPU use
per process (and per event), and whether the target (issue 10, target 3: lag p99 ≤
``--goal-ms``, default 50 ms, at the asked rate, default 500 events/s) was met; ``--json PATH``
also writes that as a summary for :mod:`bench.targets`. The projector and the relay run as
their own processes (``--mode thread`` to run them in this process).

    /work/venv/bin/python bench/bench_lag.py [--seconds 20] [--rate 500] [--command submit|progress]
        [--json out.json]

Exits 0 whether or not the target is met; 2 when the services could not be set up.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql

from bench.common import (
    BenchSystem,
    CpuMeter,
    SetupError,
    first_time_reaching,
    print_profile,
    run_main,
    say,
    summary,
    target_entry,
    warn_if_busy,
    write_summary,
)

TARGET_P99_MS = 50.0  # issue 10, target 3


def _watch(conninfo: str, table: str, name: str, interval_s: float, position: Any, stop: Any, out: Any) -> None:
    """The watcher process: poll the tracking row until ``stop`` is set, then send
    ``(observations, polls)`` through ``out``."""
    observations: list[tuple[float, int]] = []
    polls, last = 0, -1
    query = sql.SQL("SELECT position FROM {} WHERE name = %s").format(sql.Identifier(table))
    with psycopg.connect(conninfo, autocommit=True) as conn, conn.cursor() as cur:
        while not stop.is_set():
            cur.execute(query, (name,), prepare=True)
            row = cur.fetchone()
            now = time.perf_counter()  # CLOCK_MONOTONIC: the same clock in every process
            polls += 1
            current = int(row[0]) if row else 0
            if current != last:
                observations.append((now, current))
                position.value = last = current
            if interval_s:
                time.sleep(interval_s)
    out.send((observations, polls))
    out.close()


class Watcher:
    """Polls the projector's tracking row in a process of its own (so that the writer
    threads' GIL does not delay its observations) and records ``(time, position)`` changes.

    :attr:`position` is the last position seen, live; :attr:`observations` and
    :attr:`polls` are filled by :meth:`stop`.
    """

    def __init__(self, conninfo: str, row: tuple[str, str], interval_s: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._position = ctx.Value("q", -1, lock=False)  # -1 until the first poll
        self._stop = ctx.Event()
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_watch, args=(conninfo, *row, interval_s, self._position, self._stop, send),
                                 daemon=True)
        self._proc.start()
        send.close()
        self.observations: list[tuple[float, int]] = []
        self.polls = 0
        deadline = time.monotonic() + 60  # a spawned process imports the project first
        while self._position.value < 0:
            if not self._proc.is_alive() or time.monotonic() > deadline:
                raise SetupError("the watcher process did not start polling")
            time.sleep(0.01)

    @property
    def pid(self) -> int:
        """The watcher process's id."""
        return int(self._proc.pid or 0)

    @property
    def position(self) -> int:
        """The last tracked position seen."""
        return int(self._position.value)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling and collect the observations."""
        self._stop.set()
        if self._recv.poll(timeout):
            self.observations, self.polls = self._recv.recv()
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()


class Writer:
    """Sends one command per call (thread-safe); returns the position of its event."""

    def __init__(self, bench: BenchSystem, command: str, project: str, jobs: int) -> None:
        from commands.context import Actor, Context
        from commands.messages import StartJob, SubmitJob, UpdateProgress

        self.platform = bench.sys.platform
        self.command = command
        self.editor = bench.actor_context("bench-editor")
        self.submit = SubmitJob(uuid.UUID(project), "tts", {"text": "Lag benchmark payload sentence."})
        self.UpdateProgress = UpdateProgress
        self.jobs: list[uuid.UUID] = []
        self.progress: dict[uuid.UUID, int] = {}
        if command == "progress":
            self.processor = Context(Actor(id="bench-processor", username=None, role="processor"), "bench-run")
            for _ in range(jobs):
                job_id, _ = self.platform.submit_job(self.submit, self.editor)
                version = self.platform.get_job(job_id).version
                self.platform.start_job(StartJob(job_id, version, "bench-processor"), self.processor)
                self.jobs.append(job_id)
                self.progress[job_id] = 0

    def __call__(self, i: int) -> int:
        """Command number ``i`` (progress commands go round-robin over the jobs)."""
        if self.command == "submit":
            _, position = self.platform.submit_job(self.submit, self.editor)
            return int(position)
        job_id = self.jobs[i % len(self.jobs)]
        self.progress[job_id] = min(100, self.progress[job_id] + 1)
        return int(self.platform.update_progress(
            self.UpdateProgress(job_id, self.progress[job_id], f"step {i}"), self.processor))


class Schedule:
    """Open-loop schedule shared by the writer threads: command ``i`` is due at
    ``t0 + i / rate``; a writer takes the next number, sleeps until it is due (or runs it at
    once if late) and records ``(called, returned, position)``."""

    def __init__(self, write: Writer, rate: float, total: int, warm: int) -> None:
        self.write, self.interval, self.total, self.warm = write, 1.0 / rate, total, warm
        self.t0 = time.perf_counter() + 0.1
        self.next = 0
        self.lock = threading.Lock()
        self.records: list[tuple[float, float, int]] = []
        self.late = 0
        self.errors: list[str] = []
        self.warm_done = threading.Event()

    def run(self) -> None:
        while True:
            with self.lock:
                i = self.next
                self.next += 1
            if i >= self.total:
                return
            if i == self.warm:
                self.warm_done.set()
            due = self.t0 + i * self.interval
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            elif now - due > self.interval and i >= self.warm:
                self.late += 1
            called = time.perf_counter()
            try:
                position = self.write(i)
            except Exception as exc:  # noqa: BLE001 - counted and shown, the run goes on
                self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            returned = time.perf_counter()
            if i >= self.warm:
                with self.lock:
                    self.records.append((called, returned, position))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured duration (default 20)")
    parser.add_argument("--rate", type=float, default=500.0, help="events per second (default 500, issue 10)")
    parser.add_argument("--goal-ms", type=float, default=TARGET_P99_MS, help="target lag p99 (default 50 ms)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write a summary for bench/targets.py")
    parser.add_argument("--command", choices=("submit", "progress"), default="submit")
    parser.add_argument("--writers", type=int, default=4, help="writer threads sharing the schedule (default 4)")
    parser.add_argument("--jobs", type=int, default=200, help="running jobs that progress commands cycle over")
    parser.add_argument("--poll-ms", type=float, default=2.0, help="watcher poll interval (default 2 ms)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured warm-up seconds (default 2)")
    parser.add_argument("--mode", choices=("process", "thread"), default="process")
    parser.add_argument("--no-relay", action="store_true", help="do not run the outbox relay")
    parser.add_argument("--profile", default="", metavar="ROLES", help="roles (projector,relay) under cProfile")
    parser.add_argument("--profile-dir", type=Path, default=Path("/tmp/aiorch-bench-profiles"))  # noqa: S108
    args = parser.parse_args()
    profile = [r.strip() for r in args.profile.split(",") if r.strip()]
    if profile:
        args.profile_dir.mkdir(parents=True, exist_ok=True)

    other_before = warn_if_busy()
    with BenchSystem(api=False, projector=True, relay=not args.no_relay, mode=args.mode, profile=profile,
                     profile_dir=args.profile_dir) as bench:
        from infra.db import conninfo

        bench.create_user("bench-editor", "editor")
        project = bench.create_project("bench-editor")
        write = Writer(bench, args.command, project, args.jobs)
        bench.wait_projected(bench.max_position())
        watcher = Watcher(conninfo(bench.database_url), bench.tracking_row(), args.poll_ms / 1000)

        total = int((args.warmup + args.seconds) * args.rate)
        warm = int(args.warmup * args.rate)
        say(f"{args.command} commands at {args.rate:g}/s from {args.writers} writer threads: "
            f"{args.warmup:g} s warm-up, then {args.seconds:g} s measured")
        meter = CpuMeter({**bench.pids(), "watcher (polls)": watcher.pid}, bench.postgres_ids())
        schedule = Schedule(write, args.rate, total, warm)
        writers = [threading.Thread(target=schedule.run, daemon=True) for _ in range(args.writers)]
        for w in writers:
            w.start()
        schedule.warm_done.wait()
        meter.start()
        while any(w.is_alive() for w in writers):
            for w in writers:
                w.join(5)
            if any(w.is_alive() for w in writers):
                say(f"  {len(schedule.records)} events measured, read model at {watcher.position}, "
                    f"store at {bench.max_position()}")
            bench.check_roles()
        records = sorted(schedule.records)
        late = schedule.late
        if schedule.errors:
            say(f"{len(schedule.errors)} commands failed, e.g. {schedule.errors[0]}")
        elapsed = max(r[1] for r in records) - records[0][0] if records else 0.0
        last = max((r[2] for r in records), default=0)
        deadline = time.perf_counter() + 60
        while watcher.position < last and time.perf_counter() < deadline:
            bench.check_roles()
            time.sleep(0.005)
        meter.stop()
        watcher.stop()

        obs = watcher.observations
        positions = [p for _, p in obs]
        lags: list[float] = []
        lags_from_call: list[float] = []
        missing = 0
        for called, returned, position in records:
            seen = first_time_reaching(obs, positions, position)
            if seen is None:
                missing += 1
                continue
            lags.append(max(0.0, seen - returned) * 1000)
            lags_from_call.append((seen - called) * 1000)
        append = summary([(r[1] - r[0]) * 1000 for r in records])
        lag = summary(lags)
        lag_call = summary(lags_from_call)
        rate = len(records) / elapsed if elapsed else 0.0
        distinct = len({r[2] for r in records})
        batches = sum(1 for i in range(1, len(obs)) if obs[i][0] >= records[0][0]) if records else 0

        print()
        print(f"event → read-model lag  ({args.command} commands, target {args.rate:g}/s, {args.seconds:g} s, "
              f"roles {'as processes' if args.mode == 'process' else 'in threads'}{', no relay' if args.no_relay else ''})")
        print(f"  events            {len(records)} ({distinct} distinct positions; {late} sent > 1 interval late)")
        print(f"  event rate        {rate:.1f}/s")
        print(f"  append latency    p50 {append['p50']:.2f}  p99 {append['p99']:.2f}  max {append['max']:.2f} ms "
              f"(command call → commit returned)")
        print(f"  lag (commit→read) p50 {lag['p50']:.1f}  p90 {lag['p90']:.1f}  p99 {lag['p99']:.1f}  "
              f"max {lag['max']:.1f}  mean {lag['mean']:.1f} ms")
        print(f"  lag (call→read)   p50 {lag_call['p50']:.1f}  p99 {lag_call['p99']:.1f}  max {lag_call['max']:.1f} ms")
        print(f"  watcher           {watcher.polls} polls, {batches} position changes seen"
              f" (≈ {len(records) / max(batches, 1):.1f} events per projector commit)"
              + (f", {missing} events never seen" if missing else ""))
        if missing:
            print("  !! the read model stopped short of the store: the projector is stuck or failing "
                  "(rerun with AIORCH_BENCH_KEEP=1 and read projector.log in the kept folder)")
        print("  CPU during the measured run:")
        for line in meter.report(len(records)):
            print(f"    {line}")
        met = lag["p99"] <= args.goal_ms and not missing and rate >= 0.95 * args.rate
        print(f"  target lag p99 ≤ {args.goal_ms:g} ms at {args.rate:g} events/s: {'MET' if met else 'NOT MET'}"
              + ("" if rate >= 0.95 * args.rate else f" (rate reached only {rate:.0f}/s)"))
        cpu = meter.as_dict(len(records))
        entry = target_entry(
            3, f"event → read model p99, {args.command} at {args.rate:g}/s", lag["p99"] if records else None, "ms",
            f"p99 ≤ {args.goal_ms:g} ms at {args.rate:g}/s", met,
            details={"p50_ms": lag["p50"], "p90_ms": lag["p90"], "max_ms": lag["max"], "events": len(records),
                     "rate": rate, "missing": missing, "append_p50_ms": append["p50"],
                     "events_per_projector_commit": len(records) / max(batches, 1),
                     "cpu_ms_per_event": {k: v.get("ms_per_op") for k, v in cpu.items() if "ms_per_op" in v}})
        write_summary(args.json, "bench_lag.py", [entry], meter.other_cores(), cpu, other_before=other_before,
                      command=args.command, rate_asked=args.rate)
    for role in profile:
        print_profile(args.profile_dir / f"{role}.prof")
    return 0


if __name__ == "__main__":
    run_main(main)
