"""Latency of a long job's audit history: ``GET /api/jobs/{id}/history/?page_size=500``
(page 1 and page 2) for a job with ``--events`` stored events (default 1,000).

The job is submitted and started through the write side, then filled with JobProgressed
events (every 10th a JobLogsAppended of two lines), many per ``platform.save``; the API and
the projector run as their own processes (``python -m infra.cli api`` / ``projector``
through :mod:`bench.role`). One HTTP client (keep-alive, the job owner's bearer token) sends
``--requests`` requests per page (default 200) back to back after a short warm-up, page 1
and page 2 interleaved. Prints p50/p90/p99/max per page and whether p99 ≤ 50 ms was met.
``--concurrency N`` runs N such clients at once; ``--profile`` runs the API under cProfile
and prints its top functions.

    /work/venv/bin/python bench/bench_history.py [--events 1000] [--requests 200] [--profile]

Exits 0 whether or not the target is met; 2 when the services could not be set up.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_rebuild import fill_job, running_job
from bench.common import BenchSystem, CpuMeter, SetupError, print_profile, run_main, say, summary

TARGET_P99_MS = 50.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000, help="stored events of the job (default 1,000)")
    parser.add_argument("--requests", type=int, default=200, help="measured requests per page (default 200)")
    parser.add_argument("--page-size", type=int, default=500, help="page_size (default 500, the maximum)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured requests per page first (default 10)")
    parser.add_argument("--concurrency", type=int, default=1, help="concurrent clients (default 1)")
    parser.add_argument("--profile", action="store_true", help="run the API under cProfile and print its top functions")
    parser.add_argument("--profile-dir", type=Path, default=Path("/tmp/aiorch-bench-profiles"))  # noqa: S108
    args = parser.parse_args()
    if args.profile:
        args.profile_dir.mkdir(parents=True, exist_ok=True)

    load0 = os.getloadavg()
    say(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} ({os.cpu_count()} cores)")
    pages = [1, 2] if args.events > args.page_size else [1]
    with BenchSystem(
        api=True, projector=True, relay=False, profile=["api"] if args.profile else [], profile_dir=args.profile_dir
    ) as bench:
        bench.create_user("bench-editor", "editor")
        project = bench.create_project("bench-editor")
        job_id = running_job(bench, project, "bench-editor")  # 2 events
        t0 = time.perf_counter()
        fill_job(bench, job_id, max(0, args.events - 2), per_save=100)
        say(f"job {job_id}: {args.events} events stored in {time.perf_counter() - t0:.2f} s")
        http = bench.login("bench-editor")  # waits for the read models
        url = f"/api/jobs/{job_id}/history/"
        for page in pages:
            resp = http.get(url, params={"page_size": args.page_size, "page": page})
            if resp.status_code != 200:
                raise SetupError(f"GET {url} page {page}: {resp.status_code} {resp.text[:300]}")
            body = resp.json()
            say(f"page {page}: count {body['count']}, {len(body['results'])} results, {len(resp.content):,} bytes")
            if body["count"] != args.events:
                say(f"  !! count {body['count']} != {args.events} stored events")
        headers = dict(http.headers)

        samples: dict[int, list[float]] = {p: [] for p in pages}
        errors: list[str] = []
        lock = threading.Lock()

        def client(measure: bool, n: int) -> None:
            import httpx

            with httpx.Client(base_url=bench.api_url, headers=headers, timeout=30) as c:
                for _i in range(n):
                    for page in pages:
                        t = time.perf_counter()
                        r = c.get(url, params={"page_size": args.page_size, "page": page})
                        elapsed = (time.perf_counter() - t) * 1000
                        if r.status_code != 200:
                            errors.append(f"{r.status_code}")
                        elif measure:
                            with lock:
                                samples[page].append(elapsed)

        client(False, args.warmup)
        say(f"measuring {args.requests} requests per page from {args.concurrency} client(s)")
        meter = CpuMeter(bench.pids(), bench.postgres_ids())
        meter.start()
        per_client = max(1, args.requests // args.concurrency)
        threads = [threading.Thread(target=client, args=(True, per_client)) for _ in range(args.concurrency)]
        t_start = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t_start
        meter.stop()
        total = sum(len(v) for v in samples.values())
    load1 = os.getloadavg()

    print()
    print(
        f"job history  (GET /api/jobs/{{id}}/history/?page_size={args.page_size}, job of {args.events} events, "
        f"{args.concurrency} client(s), API and projector as processes)"
    )
    worst = 0.0
    for page in pages:
        s = summary(samples[page])
        worst = max(worst, s["p99"])
        print(
            f"  page {page}   n {s['n']:4d}  p50 {s['p50']:6.1f}  p90 {s['p90']:6.1f}  p99 {s['p99']:6.1f}  "
            f"max {s['max']:6.1f}  mean {s['mean']:6.1f} ms"
        )
    print(f"  throughput  {total / wall:.1f} requests/s" + (f"; {len(errors)} errors, e.g. {errors[0]}" if errors else ""))
    print("  CPU during the measured run:")
    for line in meter.report(total):
        print(f"    {line}")
    print(
        f"  load average  start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; "
        f"end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} ({os.cpu_count()} cores)"
    )
    print(f"  target p99 ≤ {TARGET_P99_MS:.0f} ms: {'MET' if worst <= TARGET_P99_MS and not errors else 'NOT MET'}")
    if args.profile:
        print_profile(args.profile_dir / "api.prof")
    return 0


if __name__ == "__main__":
    run_main(main)
