"""Group commit (infra/groupcommit.py) against eventsourcing's own recorder, in one run.

Each writer thread saves new one-event aggregates (the shape of a job submission) as fast
as it can; the two recorders take turns on one events table of a fresh database, three
rounds interleaved, and the median round is printed: appends per second, per-append
latency p50 / p99 (ms), the ratio, and the mean group size (appends per transaction).

Usage::

    .venv/bin/python -m bench.group_commit [--threads 1,8,16,32] [--seconds 4] [--rounds 3]

PostgreSQL: ``AIORCH_BENCH_DATABASE_URL`` (a server URL) or the machine's server at
``postgresql://postgres@127.0.0.1:5432/postgres``; a database is created and dropped.
Machines here are shared: compare the ratio, not the absolute rates.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid
from typing import Any

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from sqlalchemy.engine import make_url

from bench.common import percentile, say
from infra.db import conninfo, store_env


class Submission(Aggregate):
    """A one-event aggregate standing in for a submitted job."""

    @event("Submitted")
    def __init__(self, payload: str) -> None:
        self.payload = payload


class BenchStore(Application[uuid.UUID]):
    """Both recorders' application: one class, so both write the same events table."""


def run_round(store: BenchStore, threads: int, seconds: float) -> tuple[float, list[float]]:
    """``threads`` writers for ``seconds``: (appends per second, latencies in ms)."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    deadline = time.monotonic() + seconds

    def write(n: int) -> None:
        own = latencies[n]
        while time.monotonic() < deadline:
            started = time.perf_counter()
            store.save(Submission(payload="x" * 200))
            own.append((time.perf_counter() - started) * 1000)

    started = time.monotonic()
    workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    flat = sorted(x for own in latencies for x in own)
    return len(flat) / elapsed, flat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,8,16,32")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = os.environ.get("AIORCH_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"aiorch_bench_gc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo(server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    stores: dict[str, Any] = {}
    try:
        for label, grouped in (("eventsourcing", False), ("group commit", True)):
            stores[label] = BenchStore(env=store_env(url, pool_size=32, group_commit=grouped))
        say(f"database {name}; {args.rounds} interleaved rounds of {args.seconds:.0f} s per point")
        print(f"{'writers':>7} | {'recorder':<13} | {'appends/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} | {'group':>5} | ratio")
        for threads in (int(t) for t in args.threads.split(",")):
            results: dict[str, list[tuple[float, list[float]]]] = {label: [] for label in stores}
            groups: dict[str, float] = {}
            for _ in range(args.rounds):
                for label, store in stores.items():
                    recorder = store.recorder
                    g0, a0 = getattr(recorder, "groups", 0), getattr(recorder, "appends", 0)
                    results[label].append(run_round(store, threads, args.seconds))
                    g1, a1 = getattr(recorder, "groups", 0), getattr(recorder, "appends", 0)
                    groups[label] = (a1 - a0) / (g1 - g0) if g1 > g0 else 1.0
            base = statistics.median(rate for rate, _ in results["eventsourcing"])
            for label in stores:
                rate, latencies = sorted(results[label], key=lambda r: r[0])[len(results[label]) // 2]
                print(
                    f"{threads:>7} | {label:<13} | {rate:>9.0f} | {percentile(latencies, 50):>7.2f} | "
                    f"{percentile(latencies, 99):>7.2f} | {groups[label]:>5.1f} | {rate / base:.2f}×"
                )
    finally:
        for store in stores.values():
            store.close()
        with psycopg.connect(conninfo(server), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
