"""Issue 10, target 6: a 1,000-event job's history read the three ways a client does, with the
shared lean client (:mod:`bench.loadclient`, one keep-alive connection, back to back):

- ``first``: ``GET /api/jobs/{id}/history/`` (first page, default ``page_size`` 50);
- ``after``: ``GET /api/jobs/{id}/history/?after=P`` for every 50th event's position ``P``
  (the pages a client walking forward with ``?after=`` asks for), cycled;
- ``as_of``: ``GET /api/jobs/{id}/?as_of=P`` at 200 random positions of the job's events.

The job is submitted, started and filled through the write side (``bench_rebuild.fill_job``:
JobProgressed, every 10th a JobLogsAppended); API and projector run as processes. Prints p50 /
p90 / p99 per kind, CPU per role in ms per request, the cores other processes took, and MET /
NOT MET against p99 ≤ 20 ms (``as_of`` ≤ 30 ms). The client runs in this process ("bench").

    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/bench_history_walk.py [--events 1000] [--seconds 10]

Exits 0 whether or not the target is met; 2 when the services could not be set up.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_rebuild import fill_job, running_job
from bench.common import BenchSystem, CpuMeter, SetupError, run_main, say, target_entry, warn_if_busy, write_summary
from bench.loadclient import encode, run_load

TARGETS_MS = {"first": 20.0, "after": 20.0, "as_of": 30.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000, help="stored events of the job (default 1,000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per kind (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write a summary for bench/targets.py")
    args = parser.parse_args()

    other_before = warn_if_busy()

    with BenchSystem(api=True, projector=True, relay=False) as bench:
        bench.create_user("bench-editor", "editor")
        project = bench.create_project("bench-editor")
        job_id = running_job(bench, project, "bench-editor")
        fill_job(bench, job_id, max(0, args.events - 2), per_save=100)
        http = bench.login("bench-editor")  # waits for the read models
        token = str(http.headers["Authorization"])
        positions: list[int] = []
        url = f"/api/jobs/{job_id}/history/"
        after = 0
        while True:
            resp = http.get(url, params={"after": after, "page_size": 500})
            if resp.status_code != 200:
                raise SetupError(f"GET {url}: {resp.status_code} {resp.text[:300]}")
            page = [int(item["position"]) for item in resp.json()["results"]]
            if not page:
                break
            positions += page
            after = page[-1]
        http.close()
        say(f"job {job_id}: {len(positions)} events, positions {positions[0]}…{positions[-1]}")
        if len(positions) != args.events:
            say(f"  !! {len(positions)} events listed, {args.events} stored")
        headers = {"Authorization": token, "Accept": "application/json"}
        rng = random.Random(10)
        kinds = {
            "first": [url],
            "after": [f"{url}?after={positions[i]}" for i in range(0, len(positions) - 1, 50)],
            "as_of": [f"/api/jobs/{job_id}/?as_of={p}" for p in rng.sample(positions, min(200, len(positions)))],
        }
        results = {}
        for kind, paths in kinds.items():
            meter = CpuMeter(bench.pids(), bench.postgres_ids())
            edges = {"measure": threading.Event(), "stop": threading.Event()}

            def sampler(m: CpuMeter = meter, e: dict[str, threading.Event] = edges) -> None:
                e["measure"].wait()
                m.start()  # off the client's event loop: a /proc scan takes milliseconds
                e["stop"].wait()
                m.stop()

            th = threading.Thread(target=sampler)
            th.start()
            load = run_load(bench.api_url, [encode("GET", p, headers) for p in paths], connections=args.connections,
                            seconds=args.seconds, warmup=args.warmup, ok_statuses=[200],
                            on_edge=lambda edge, e=edges: e[edge].set())
            th.join()
            results[kind] = (load, meter)
            say(f"{kind:6s} {load.line()}")

    print()
    print(f"job history, {args.events} events, {args.connections} connection(s), {args.seconds:g} s per kind, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for kind, (load, meter) in results.items():
        lat = load.latency_ms
        met = lat["p99"] <= TARGETS_MS[kind] and load.ok == load.requests
        print(f"  {kind:6s} {load.rate:7.1f}/s  p50 {lat['p50']:6.1f}  p90 {lat['p90']:6.1f}  p99 {lat['p99']:6.1f} ms "
              f"(target p99 ≤ {TARGETS_MS[kind]:g}: {'MET' if met else 'NOT MET'}), errors {load.requests - load.ok}")
        for line in meter.report(load.ok):
            print(f"      {line}")
    names = {"first": "history first page", "after": "history ?after= pages", "as_of": "GET job ?as_of= random P"}
    entries = []
    for kind, (load, meter) in results.items():
        lat = load.latency_ms
        entries.append(target_entry(
            6, f"{names[kind]} p99", lat["p99"] if load.ok else None, "ms", f"p99 ≤ {TARGETS_MS[kind]:g} ms",
            lat["p99"] <= TARGETS_MS[kind] and load.ok == load.requests,
            details={"rate": load.rate, "p50_ms": lat["p50"], "p90_ms": lat["p90"], "errors": load.requests - load.ok,
                     "other_cores": meter.other_cores(), "cpu": meter.as_dict(load.ok)}))
    others = [meter.other_cores() for _load, meter in results.values()]
    write_summary(args.json, "bench_history_walk.py", entries, max(others, default=None),
                  {kind: meter.as_dict(load.ok) for kind, (load, meter) in results.items()}, other_before=other_before)
    return 0


if __name__ == "__main__":
    run_main(main)
