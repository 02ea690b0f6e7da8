"""Sustained job submission over HTTP: ``POST /api/jobs/`` (JSON tts jobs) from N concurrent
clients for a fixed time, with no processors running (jobs stay pending).

What one request measures: JWT check and user lookup, parameter validation, the Project
load and the JobSubmitted append (eventsourcing, PostgreSQL), then the API's wait until the
projector has put the job into the read model (the 201 is only sent after that), and the
read of the job row. So the latency includes projection.

Prints requests, statuses, rate/s, latency p50/p90/p99/max (ms), the CPU each process used,
and whether the target (≥ 300 submits/s with p99 ≤ 100 ms) was met.

    /work/venv/bin/python bench/bench_submit.py [--seconds 20] [--clients 8] [--mode process|thread]

Exits 0 whether or not the target is met; 2 when the services could not be set up.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.common import BenchSystem, CpuMeter, print_profile, run_main, say, summary, warn_if_busy

TARGET_RATE = 300.0
TARGET_P99_MS = 100.0
TEXT = "The quick brown fox jumps over the lazy dog. This sentence is only a benchmark payload."


class Client(threading.Thread):
    """One client: submits jobs back to back until ``stop_at`` and records each request."""

    def __init__(self, base_url: str, token: str, project: str, start_at: float, measure_from: float,
                 stop_at: float) -> None:
        super().__init__(daemon=True)
        self.http = httpx.Client(base_url=base_url, timeout=30, headers={"Authorization": token})
        self.body = {"project": project, "type": "tts", "parameters": {"text": TEXT}}
        self.start_at, self.measure_from, self.stop_at = start_at, measure_from, stop_at
        self.samples: list[tuple[float, float, str]] = []  # (end time, latency s, status)
        self.done = 0

    def run(self) -> None:
        while time.perf_counter() < self.start_at:
            time.sleep(0.001)
        while True:
            t0 = time.perf_counter()
            if t0 >= self.stop_at:
                break
            try:
                status = str(self.http.post("/api/jobs/", json=self.body).status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            t1 = time.perf_counter()
            self.done += 1
            if t0 >= self.measure_from:
                self.samples.append((t1, t1 - t0, status))
        self.http.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured duration (default 20)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured warm-up seconds (default 3)")
    parser.add_argument("--mode", choices=("process", "thread"), default="process",
                        help="roles as child processes (default, like `aiorch up`) or threads of this process")
    parser.add_argument("--no-relay", action="store_true", help="do not run the outbox relay")
    parser.add_argument("--profile", default="", metavar="ROLES",
                        help="comma-separated roles (api,projector,relay) to run under cProfile; "
                             "stats are printed and kept in --profile-dir")
    parser.add_argument("--profile-dir", type=Path, default=Path("/tmp/aiorch-bench-profiles"))  # noqa: S108
    args = parser.parse_args()
    profile = [r.strip() for r in args.profile.split(",") if r.strip()]
    if profile:
        args.profile_dir.mkdir(parents=True, exist_ok=True)

    warn_if_busy()
    with BenchSystem(api=True, projector=True, relay=not args.no_relay, mode=args.mode, profile=profile,
                     profile_dir=args.profile_dir) as bench:
        bench.create_user("bench-editor", "editor")
        http = bench.login("bench-editor")
        project = bench.create_project_http(http)
        token = str(http.headers["Authorization"])
        http.close()
        say(f"{args.clients} clients, {args.warmup:g} s warm-up, then {args.seconds:g} s measured")

        start_at = time.perf_counter() + 0.2
        measure_from = start_at + args.warmup
        stop_at = measure_from + args.seconds
        clients = [Client(bench.api_url, token, project, start_at, measure_from, stop_at) for _ in range(args.clients)]
        for c in clients:
            c.start()
        meter = CpuMeter(bench.pids(), bench.postgres_ids())
        while time.perf_counter() < measure_from:
            time.sleep(0.05)
        meter.start()
        last_report = measure_from
        while any(c.is_alive() for c in clients):
            time.sleep(0.1)
            now = time.perf_counter()
            if now - last_report >= 5 and now < stop_at:
                done = sum(len(c.samples) for c in clients)
                say(f"  {now - measure_from:5.1f} s: {done} requests, {done / (now - measure_from):.0f}/s")
                last_report = now
            bench.check_roles()
        meter.stop()

        samples = [s for c in clients for s in c.samples]
        statuses = Counter(s[2] for s in samples)
        ok = [s[1] * 1000 for s in samples if s[2] == "201"]
        all_ms = [s[1] * 1000 for s in samples]
        span = max((s[0] for s in samples), default=stop_at) - measure_from
        rate = len(ok) / span if span > 0 else 0.0
        lat = summary(ok)
        lat_all = summary(all_ms)

        say("waiting for the projector to finish")
        catch_up = bench.wait_projected(bench.max_position(), 60)
        with bench.sys.engine.connect() as conn:
            from sqlalchemy import func, select

            from projections import tables as t

            jobs = conn.execute(select(func.count()).select_from(t.jobs)).scalar_one()

        print()
        roles = "as processes" if args.mode == "process" else "in threads"
        print(f"POST /api/jobs/  ({args.clients} clients, {args.seconds:g} s, roles {roles}"
              f"{'' if not args.no_relay else ', no relay'})")
        print(f"  requests          {len(samples)}")
        print(f"  statuses          {', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))}")
        errors = {k: v for k, v in statuses.items() if k != "201"}
        print(f"  errors            {sum(errors.values())}" + (f" ({errors})" if errors else ""))
        print(f"  rate (201/s)      {rate:.1f}")
        print(f"  latency of 201s   p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  "
              f"max {lat['max']:.1f}  mean {lat['mean']:.1f} ms")
        if errors:
            print(f"  latency of all    p50 {lat_all['p50']:.1f}  p99 {lat_all['p99']:.1f}  max {lat_all['max']:.1f} ms")
        print(f"  jobs in read model {jobs}, warm-up included (projector caught up {catch_up * 1000:.0f} ms after the run)")
        print("  CPU during the measured run:")
        for line in meter.report(len(ok)):
            print(f"    {line}")
        met = rate >= TARGET_RATE and lat["p99"] <= TARGET_P99_MS and not errors
        print(f"  target ≥ {TARGET_RATE:.0f}/s and p99 ≤ {TARGET_P99_MS:.0f} ms: "
              f"{'MET' if met else 'NOT MET'} (rate {'ok' if rate >= TARGET_RATE else 'short'}, "
              f"p99 {'ok' if lat['p99'] <= TARGET_P99_MS else 'over'}"
              f"{', errors' if errors else ''})")
        if profile:
            print("  (roles ran under cProfile: figures are slower than without it)")
    for role in profile:
        print_profile(args.profile_dir / f"{role}.prof")
    return 0


if __name__ == "__main__":
    run_main(main)
