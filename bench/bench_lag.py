"""Event-to-read-model lag at a steady event rate (default 200 events/s).

One writer thread sends real commands straight to the write side at a fixed schedule
(open loop: a late command does not delay the next ones' schedule):

- ``--command submit`` (default): ``platform.submit_job(SubmitJob(...))``, one JobSubmitted
  event each;
- ``--command progress``: ``platform.update_progress(...)`` round-robin over 20 running jobs,
  one JobProgressed event each (loads a job aggregate from the store first).

Each command returns the position (notification id) of its event once committed; the time
it returned is taken as the commit time. A watcher thread polls the projector's tracking row
(``projection_tracking``) every ``--poll-ms`` (default 1 ms) on its own connection and notes
when the position changes. An event's lag is the first time the tracking position was seen
≥ its position, minus its commit time (the poll interval adds up to ``--poll-ms``).

Prints achieved event rate, command (append) latency, lag p50/p90/p99/max (ms), CPU use per
process, and whether the target (lag p99 ≤ 100 ms) was met. The projector and the relay run
as their own processes (``--mode thread`` to run them in this process).

    /work/venv/bin/python bench/bench_lag.py [--seconds 20] [--rate 200] [--command submit|progress]

Exits 0 whether or not the target is met; 2 when the services could not be set up.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402

from bench.common import (  # noqa: E402
    BenchSystem,
    CpuMeter,
    first_time_reaching,
    print_profile,
    run_main,
    say,
    summary,
)

TARGET_P99_MS = 100.0
JOBS_FOR_PROGRESS = 20


class Watcher(threading.Thread):
    """Polls the projector's tracking position and records ``(time, position)`` changes."""

    def __init__(self, conninfo: str, name: str, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.name_, self.interval_s = name, interval_s
        self.observations: list[tuple[float, int]] = []
        self.polls = 0
        self._halt = threading.Event()

    def run(self) -> None:
        query = "SELECT position FROM projection_tracking WHERE name = %s"
        last = -1
        with self.conn.cursor() as cur:
            while not self._halt.is_set():
                cur.execute(query, (self.name_,), prepare=True)
                row = cur.fetchone()
                now = time.perf_counter()
                self.polls += 1
                position = int(row[0]) if row else 0
                if position != last:
                    self.observations.append((now, position))
                    last = position
                if self.interval_s:
                    time.sleep(self.interval_s)
        self.conn.close()

    def stop(self) -> None:
        """Stop polling (returns at once; join to wait)."""
        self._halt.set()


class Writer:
    """Sends one command per call; returns the position of its event."""

    def __init__(self, bench: BenchSystem, command: str, project: str) -> None:
        from commands.context import Actor, Context
        from commands.messages import StartJob, SubmitJob, UpdateProgress

        self.platform = bench.sys.platform
        self.command = command
        self.editor = bench.actor_context("bench-editor")
        self.submit = SubmitJob(uuid.UUID(project), "tts", {"text": "Lag benchmark payload sentence."})
        self.UpdateProgress = UpdateProgress
        self.jobs: list[uuid.UUID] = []
        self.progress: dict[uuid.UUID, int] = {}
        self.i = 0
        if command == "progress":
            self.processor = Context(Actor(id="bench-processor", username=None, role="processor"), "bench-run")
            for _ in range(JOBS_FOR_PROGRESS):
                job_id, _ = self.platform.submit_job(self.submit, self.editor)
                version = self.platform.get_job(job_id).version
                self.platform.start_job(StartJob(job_id, version, "bench-processor"), self.processor)
                self.jobs.append(job_id)
                self.progress[job_id] = 0

    def __call__(self) -> int:
        self.i += 1
        if self.command == "submit":
            _, position = self.platform.submit_job(self.submit, self.editor)
            return int(position)
        job_id = self.jobs[self.i % len(self.jobs)]
        self.progress[job_id] = min(100, self.progress[job_id] + 1)
        return int(self.platform.update_progress(
            self.UpdateProgress(job_id, self.progress[job_id], f"step {self.i}"), self.processor))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured duration (default 20)")
    parser.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    parser.add_argument("--command", choices=("submit", "progress"), default="submit")
    parser.add_argument("--poll-ms", type=float, default=1.0, help="watcher poll interval (default 1 ms)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured warm-up seconds (default 2)")
    parser.add_argument("--mode", choices=("process", "thread"), default="process")
    parser.add_argument("--no-relay", action="store_true", help="do not run the outbox relay")
    parser.add_argument("--profile", default="", metavar="ROLES", help="roles (projector,relay) under cProfile")
    parser.add_argument("--profile-dir", type=Path, default=Path("/tmp/aiorch-bench-profiles"))
    args = parser.parse_args()
    profile = [r.strip() for r in args.profile.split(",") if r.strip()]
    if profile:
        args.profile_dir.mkdir(parents=True, exist_ok=True)

    with BenchSystem(api=False, projector=True, relay=not args.no_relay, mode=args.mode, profile=profile,
                     profile_dir=args.profile_dir) as bench:
        from infra.db import conninfo
        from projections.projector import NAME

        bench.create_user("bench-editor", "editor")
        project = bench.create_project("bench-editor")
        write = Writer(bench, args.command, project)
        bench.wait_projected(bench.max_position())
        watcher = Watcher(conninfo(bench.database_url), NAME, args.poll_ms / 1000)
        watcher.start()

        interval = 1.0 / args.rate
        total = int((args.warmup + args.seconds) * args.rate)
        warm = int(args.warmup * args.rate)
        say(f"{args.command} commands at {args.rate:g}/s: {args.warmup:g} s warm-up, then {args.seconds:g} s measured")
        records: list[tuple[float, float, int]] = []  # (called, returned, position)
        late = 0
        meter = CpuMeter(bench.pids())
        t0 = time.perf_counter() + 0.05
        next_report = t0 + args.warmup + 5
        for i in range(total):
            if i == warm:
                meter.start()
            due = t0 + i * interval
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            elif now - due > interval:
                late += i >= warm
            called = time.perf_counter()
            position = write()
            returned = time.perf_counter()
            if i >= warm:
                records.append((called, returned, position))
            if returned >= next_report:
                n = len(records)
                say(f"  {n} events measured, tracking at {watcher.observations[-1][1] if watcher.observations else 0}, "
                    f"last position {position}")
                next_report += 5
        elapsed = records[-1][1] - records[0][0] if records else 0.0
        last = records[-1][2] if records else 0
        deadline = time.perf_counter() + 60
        while (not watcher.observations or watcher.observations[-1][1] < last) and time.perf_counter() < deadline:
            bench.check_roles()
            time.sleep(0.005)
        meter.stop()
        watcher.stop()
        watcher.join(5)

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
              f"roles as {args.mode}es{', no relay' if args.no_relay else ''})")
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
        print("  CPU during the measured run:")
        for line in meter.report():
            print(f"    {line}")
        met = lag["p99"] <= TARGET_P99_MS and not missing and rate >= 0.95 * args.rate
        print(f"  target lag p99 ≤ {TARGET_P99_MS:.0f} ms at {args.rate:g} events/s: {'MET' if met else 'NOT MET'}"
              + ("" if rate >= 0.95 * args.rate else f" (rate reached only {rate:.0f}/s)"))
    for role in profile:
        print_profile(args.profile_dir / f"{role}.prof")
    return 0


if __name__ == "__main__":
    run_main(main)
