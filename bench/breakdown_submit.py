"""Where a ``POST /api/jobs/`` spends its time: the API runs in this process (uvicorn in a
thread) with timers around the steps of the submit path; the projector and the relay run as
their own processes, as in production.

Each timer records wall time and the calling thread's CPU time (``time.thread_time``), so
the table shows, per request, how long each step took and how much CPU it burnt. Steps nest
(``submit_job`` includes a ``prepare_submission``, ``wait_for`` includes every
``projected_position`` poll, ...): the indentation shows it. The totals line gives the API's
whole CPU per request (event loop + worker threads, the clients' own CPU excluded).

    /work/venv/bin/python bench/breakdown_submit.py [--requests 300] [--clients 1]

``--clients 1`` shows the latency of one request on an idle system; ``--clients 8`` shows
what concurrency adds (wall times then include waiting for the GIL and the pools). Names
that the code no longer has are skipped. Exits 2 when the services could not be set up.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.common import BenchSystem, ThreadApi, process_cpu_s, run_main, say, summary, warn_if_busy
from infra.embedded import free_port

# (label, where, attribute): the steps timed, in the order of the submit path. Indentation
# in the label shows nesting.
STEPS: list[tuple[str, str, str]] = [
    ("current_user: check_token (JWT + 2 queries)", "api.deps", "check_token"),
    ("  TokenIssuer.decode (JWT, HS256)", "api.auth:TokenIssuer", "decode"),
    ("_read_submission (body, pydantic)", "api.routers.jobs", "_read_submission"),
    ("Platform.prepare_submission (route; again in submit)", "commands.service:Platform", "prepare_submission"),
    ("  Platform.validate_job", "commands.service:Platform", "validate_job"),
    ("Services.upload_limit", "api.deps:Services", "upload_limit"),
    ("_store_files", "api.routers.jobs", "_store_files"),
    ("Platform.submit_job (write side)", "commands.service:Platform", "submit_job"),
    ("  Platform._get (load aggregates)", "commands.service:Platform", "_get"),
    ("  Application.save (append + NOTIFY)", "commands.service:Platform", "save"),
    ("Services.wait_for (201 waits for the projector)", "api.deps:Services", "wait_for"),
    ("  Services.projected_position (one poll)", "api.deps:Services", "projected_position"),
    ("load_job (read model row)", "api.routers.jobs", "load_job"),
    ("job_json", "api.routers.jobs", "job_json"),
]

_records: dict[str, list[tuple[float, float, int]]] = defaultdict(list)  # (wall s, CPU s, depth)
_client_threads: set[int] = set()
_depth = threading.local()


def _wrap(label: str, where: str, attr: str) -> bool:
    import importlib

    module_name, _, cls_name = where.partition(":")
    try:
        owner: Any = importlib.import_module(module_name)
        if cls_name:
            owner = getattr(owner, cls_name)
        original = getattr(owner, attr)
    except (ImportError, AttributeError):
        return False

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() in _client_threads:
            return original(*args, **kwargs)
        depth = getattr(_depth, "n", 0)
        _depth.n = depth + 1
        w0, c0 = time.perf_counter(), time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            _records[label].append((time.perf_counter() - w0, time.thread_time() - c0, depth))
            _depth.n = depth

    if asyncio_iscoroutinefunction(original):

        @functools.wraps(original)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            w0 = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                _records[label].append((time.perf_counter() - w0, float("nan"), 0))

        setattr(owner, attr, timed_async)
    else:
        setattr(owner, attr, timed)
    return True


def asyncio_iscoroutinefunction(f: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(f)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="measured requests (default 300)")
    parser.add_argument("--clients", type=int, default=1, help="concurrent clients (default 1)")
    args = parser.parse_args()

    wrapped = [label for label, where, attr in STEPS if _wrap(label, where, attr)]
    skipped = [label for label, _w, _a in STEPS if label not in wrapped]
    warn_if_busy()
    with BenchSystem(api=False, projector=True, relay=True) as bench:
        port = free_port()
        api = ThreadApi(bench.sys, port)
        bench.api_url = f"http://127.0.0.1:{port}"
        bench.want_api = True
        bench.roles["api"] = api
        bench._wait_api(api)
        bench.create_user("bench-editor", "editor")
        http = bench.login("bench-editor")
        project = bench.create_project_http(http)
        token = str(http.headers["Authorization"])
        body = {"project": project, "type": "tts", "parameters": {"text": "Breakdown benchmark payload."}}
        for _ in range(20):  # warm-up
            http.post("/api/jobs/", json=body)
        _records.clear()

        per_client = max(1, args.requests // args.clients)
        latencies: list[float] = []
        client_cpu: list[float] = []
        statuses: dict[int, int] = defaultdict(int)

        def client() -> None:
            _client_threads.add(threading.get_ident())
            c0 = time.thread_time()
            with httpx.Client(base_url=bench.api_url, timeout=30, headers={"Authorization": token}) as h:
                for _ in range(per_client):
                    t0 = time.perf_counter()
                    status = h.post("/api/jobs/", json=body).status_code
                    latencies.append(time.perf_counter() - t0)
                    statuses[status] += 1
            client_cpu.append(time.thread_time() - c0)

        say(f"{per_client * args.clients} requests from {args.clients} client(s)")
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        cpu0, w0 = process_cpu_s(os.getpid()), time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cpu1, wall = process_cpu_s(os.getpid()), time.perf_counter() - w0
        n = len(latencies)
        api_cpu_ms = ((cpu1 - cpu0) - sum(client_cpu)) * 1000 / n
        lat = summary([x * 1000 for x in latencies])

        print()
        print(f"POST /api/jobs/ breakdown: {n} requests, {args.clients} client(s), {n / wall:.1f}/s, "
              f"statuses {dict(statuses)}")
        print(f"  latency p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  max {lat['max']:.1f} ms")
        print(f"  API CPU per request (whole process, clients excluded): {api_cpu_ms:.2f} ms")
        print()
        print(f"  {'step':52s} {'calls/req':>9s} {'wall ms/req':>11s} {'CPU ms/req':>10s} {'wall p50':>9s} {'wall p99':>9s}")
        for label in wrapped:
            rec = _records.get(label, [])
            if not rec:
                continue
            walls = [r[0] * 1000 for r in rec]
            cpus = [r[1] * 1000 for r in rec if r[1] == r[1]]
            s = summary(walls)
            cpu = f"{sum(cpus) / n:10.2f}" if cpus else f"{'-':>10s}"
            print(f"  {label:52s} {len(rec) / n:9.2f} {sum(walls) / n:11.2f} {cpu} {s['p50']:9.2f} {s['p99']:9.2f}")
        top_cpu = sum(r[1] for label in wrapped for r in _records.get(label, []) if r[1] == r[1] and r[2] == 0) * 1000 / n
        print(f"  {'rest: FastAPI/uvicorn, to_thread hops, untimed code':52s} {'':9s} {'':11s} "
              f"{api_cpu_ms - top_cpu:10.2f}")
        if skipped:
            print(f"  (not found in the code, not timed: {', '.join(skipped)})")
    return 0


if __name__ == "__main__":
    run_main(main)
