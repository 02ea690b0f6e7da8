"""Webhook delivery throughput and latency: ``--events`` stored job events (default 1,000)
for ``--endpoints`` endpoints (default 10), delivered by the dispatcher role to a real HTTP
receiver on loopback that verifies every request with the ``standardwebhooks`` library.

Services: PostgreSQL, the embedded broker, the projector and the relay as in
:mod:`bench.common`, plus ``aiorch dispatcher`` as its own process (``--mode thread``: in
this process). ``AIORCH_WEBHOOK_ALLOW_PRIVATE=true`` (the receiver is on 127.0.0.1); all
other settings are the production defaults (16 concurrent requests, 500 events per
recording batch).

Load: ``--events / 4`` jobs, each submitted, started, progressed once and completed through
the write side by ``--writers`` threads (4 events a job: ``job.created``, ``job.started``,
``job.progress``, ``job.completed``), as fast as the store takes them (a backlog: the
latency then is mostly queueing), or at ``--rate`` events/s (open loop). Endpoints (see
:func:`endpoint_specs`) have mixed subscriptions and owners: the jobs' editor's (``*``,
single types, pairs), an admin's (``*``: sees every job) and another editor's (``*``: sees
none of these jobs), so the expected (endpoint, event) pairs follow API.md's rules.

Figures:

- deliveries/s: successful deliveries / (last delivery − first event), from the first
  stored event of the load to the last 2xx the receiver answered;
- event → delivery latency p50/p99 (ms): the receiver's clock when the request arrived
  minus the event's ``timestamp`` in the payload (when the aggregate produced it, a hair
  before its commit), over every delivery's first arrival;
- exactly once: every expected (endpoint, event) pair answered 2xx once, nothing else.

    /work/main/.venv/bin/python bench/webhooks.py [--events 1000] [--endpoints 10] [--writers 4] [--rate 0]

Exits 0 with the figures (and 1 when a pair was lost or delivered twice); 2 when the
services could not be set up. The pieces (:class:`VerifyingReceiver`, :func:`create_endpoints`,
:func:`produce`, :func:`expected_pairs`, :func:`check_exactly_once`) are shared with
``tests/integration/test_webhooks_load.py``, which runs them at a small N.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from commands.context import Actor, Context
from commands.messages import CompleteJob, CreateProject, StartJob, SubmitJob, UpdateProgress
from commands.webhook_messages import CreateWebhook

JOB_EVENT_TYPES = ("job.created", "job.started", "job.progress", "job.completed")


class VerifyingReceiver:
    """A threaded HTTP server on 127.0.0.1: ``POST /e<i>`` verifies the request with
    endpoint i's secret (standardwebhooks; 400 when it fails) and answers 204.

    Attributes:
        arrivals: ``(path, position) -> [arrival times]`` (``time.time()``, s) of verified
            requests, one per 2xx answered.
        first_latency_s: ``(path, position) -> arrival − payload timestamp`` (s) of the
            first arrival.
        forged: requests that failed verification (path, reason).
    """

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.arrivals: dict[tuple[str, int], list[float]] = {}
        self.first_latency_s: dict[tuple[str, int], float] = {}
        self.forged: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                now = time.time()
                body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                try:
                    payload = Webhook(receiver.secrets[self.path]).verify(body, dict(self.headers))
                except (WebhookVerificationError, KeyError) as exc:
                    with receiver.lock:
                        receiver.forged.append((self.path, repr(exc)))
                    self.send_response(400)
                else:
                    key = (self.path, int(payload["data"]["position"]))
                    produced = datetime.fromisoformat(payload["timestamp"]).timestamp()
                    with receiver.lock:
                        receiver.arrivals.setdefault(key, []).append(now)
                        receiver.first_latency_s.setdefault(key, now - produced)
                    self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True)
        self.thread.start()

    def delivered(self) -> int:
        """How many 2xx answers were given."""
        with self.lock:
            return sum(len(v) for v in self.arrivals.values())

    def close(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()


@dataclass(frozen=True)
class Endpoint:
    """One registered endpoint: its receiver path, owner (user id, role) and events."""

    id: str
    path: str
    owner_id: str
    owner_role: str
    events: tuple[str, ...]


@dataclass
class Load:
    """What :func:`produce` stored: ``events`` as ``(position, type, job owner id)``; the
    wall-clock times (``time.time()``) of the first and last commit."""

    events: list[tuple[int, str, str]] = field(default_factory=list)
    started_at: float = 0.0
    finished_at: float = 0.0


def endpoint_specs(count: int) -> list[tuple[str, tuple[str, ...]]]:
    """``count`` endpoints as ``(owner, events)``, owner ``editor`` (the jobs' owner),
    ``admin`` or ``other`` (an editor who sees none of the jobs): cycling through
    ``*``, each single type, two pairs, the admin's ``*`` and the other editor's ``*``."""
    cycle: list[tuple[str, tuple[str, ...]]] = [
        ("editor", ("*",)),
        ("editor", ("job.completed",)),
        ("editor", ("job.created", "job.started")),
        ("admin", ("*",)),
        ("editor", ("job.progress",)),
        ("editor", ("*",)),
        ("other", ("*",)),
        ("editor", ("job.started", "job.completed")),
        ("editor", ("job.created",)),
        ("editor", ("*",)),
    ]
    return [cycle[i % len(cycle)] for i in range(count)]


def create_endpoints(platform: Any, receiver: VerifyingReceiver, owners: dict[str, Context], count: int) -> list[Endpoint]:
    """Register ``count`` endpoints (:func:`endpoint_specs`) through the write side, each on
    its own receiver path with its secret; ``owners`` maps editor/admin/other to contexts."""
    out: list[Endpoint] = []
    for i, (owner, events) in enumerate(endpoint_specs(count)):
        ctx = owners[owner]
        path = f"/e{i}"
        endpoint_id, _, secret = platform.create_webhook(CreateWebhook(receiver.url + path, list(events)), ctx)
        receiver.secrets[path] = secret
        out.append(Endpoint(str(endpoint_id), path, ctx.actor.id, ctx.actor.role, events))
    return out


def produce(platform: Any, editor: Context, project_id: uuid.UUID, events: int, writers: int = 4, rate: float = 0.0) -> Load:
    """Store ``events`` job events (rounded down to whole jobs of four) from ``writers``
    threads, as fast as the store takes them or, with ``rate`` (events/s), job ``i``
    started at ``t0 + 4 i / rate`` (open loop); returns what was stored."""
    jobs = max(events // 4, 1)
    load = Load()
    lock = threading.Lock()
    proc = Context(Actor(id="bench-proc", username=None, role="processor"), f"bench-{uuid.uuid4()}")
    errors: list[BaseException] = []

    def one_job(i: int) -> list[tuple[int, str, str]]:
        job_id, p0 = platform.submit_job(SubmitJob(project_id, "tts", {"text": f"bench job {i}"}), editor)
        p1 = platform.start_job(StartJob(job_id, 1, "bench-proc"), proc)
        p2 = platform.update_progress(UpdateProgress(job_id, 50, "synthesis"), proc)
        p3 = platform.complete_job(CompleteJob(job_id, {"files": [], "meta": {}}), proc)
        return [(p, kind, editor.actor.id) for p, kind in zip((p0, p1, p2, p3), JOB_EVENT_TYPES, strict=True)]

    def writer(k: int) -> None:
        try:
            for i in range(k, jobs, writers):
                if rate > 0:
                    time.sleep(max(0.0, t0 + 4 * i / rate - time.monotonic()))
                stored = one_job(i)
                with lock:
                    load.events.extend(stored)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
            errors.append(exc)

    load.started_at, t0 = time.time(), time.monotonic()
    threads = [threading.Thread(target=writer, args=(k,), name=f"writer-{k}") for k in range(writers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    load.finished_at = time.time()
    if errors:
        raise errors[0]
    load.events.sort()
    return load


def expected_pairs(endpoints: list[Endpoint], load: Load) -> set[tuple[str, int]]:
    """Every ``(receiver path, position)`` that must be delivered: the endpoint subscribes
    to the event's type and its owner may see the job (admins and viewers every job,
    editors their own)."""
    out: set[tuple[str, int]] = set()
    for e in endpoints:
        for position, kind, owner in load.events:
            sees = e.owner_role in ("admin", "viewer") or e.owner_id == owner
            if sees and ("*" in e.events or kind in e.events):
                out.add((e.path, position))
    return out


def check_exactly_once(receiver: VerifyingReceiver, expected: set[tuple[str, int]]) -> dict[str, Any]:
    """``{missing, twice, unexpected, forged}``: expected pairs not delivered, pairs
    answered 2xx more than once (with their counts), delivered pairs not expected, and
    requests that failed verification. All empty means exactly once."""
    with receiver.lock:
        counts = Counter({k: len(v) for k, v in receiver.arrivals.items()})
        forged = list(receiver.forged)
    return {
        "missing": sorted(expected - set(counts)),
        "twice": {k: n for k, n in counts.items() if n > 1},
        "unexpected": sorted(set(counts) - expected),
        "forged": forged,
    }


def wait_delivered(receiver: VerifyingReceiver, expected: int, timeout: float, alive: Any = None) -> bool:
    """Wait until ``expected`` 2xx answers were given (True) or ``timeout`` s pass (False);
    ``alive()`` (optional) raises when a role died."""
    deadline = time.monotonic() + timeout
    while receiver.delivered() < expected:
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def figures(receiver: VerifyingReceiver, load: Load) -> dict[str, float]:
    """``{deliveries, deliveries_per_s, p50_ms, p90_ms, p99_ms, max_ms, span_s}``."""
    from bench.common import summary

    with receiver.lock:
        arrivals = [t for v in receiver.arrivals.values() for t in v]
        latencies = [v * 1000 for v in receiver.first_latency_s.values()]
    span = (max(arrivals) - load.started_at) if arrivals else float("nan")
    stats = summary(latencies)
    return {
        "deliveries": float(len(arrivals)),
        "deliveries_per_s": len(arrivals) / span if arrivals else float("nan"),
        "p50_ms": stats["p50"],
        "p90_ms": stats["p90"],
        "p99_ms": stats["p99"],
        "max_ms": stats["max"],
        "span_s": span,
    }


def main() -> int:
    from bench.common import BenchSystem, CpuMeter, Role, SetupError, say, warn_if_busy

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.0, help="events/s (open loop); 0: as fast as the store takes them")
    parser.add_argument("--mode", choices=["process", "thread"], default="process")
    parser.add_argument("--profile", type=Path, default=None, help="run the dispatcher under cProfile, stats to this file")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every delivery")
    args = parser.parse_args()

    warn_if_busy()
    receiver = VerifyingReceiver()
    with BenchSystem(api=False, mode=args.mode, settings={"webhook_allow_private": True}) as bench:
        system = bench.sys
        if args.mode == "process":
            dispatcher: Any = Role("dispatcher", ["dispatcher"], bench.role_env(), bench.tmp / "dispatcher.log", args.profile)
            bench.roles["dispatcher"] = dispatcher
            deadline = time.monotonic() + 60
            while "leading dispatcher" not in dispatcher.log_file.read_text(errors="replace"):
                dispatcher.check()
                if time.monotonic() > deadline:
                    raise SetupError("the dispatcher did not take the leadership within 60 s")
                time.sleep(0.1)
            say(f"dispatcher: process {dispatcher.pid}")
        else:
            from bench.common import ThreadRole
            from infra.dispatcher import build_dispatcher

            bench.roles["dispatcher"] = ThreadRole("dispatcher", build_dispatcher(system))
        for name, role in (("bench-editor", "editor"), ("bench-admin", "admin"), ("bench-other", "editor")):
            bench.create_user(name, role)
        owners = {
            "editor": bench.actor_context("bench-editor"),
            "admin": bench.actor_context("bench-admin", "admin"),
            "other": bench.actor_context("bench-other"),
        }
        project_id, _ = system.platform.create_project(CreateProject("Webhooks bench"), owners["editor"])
        endpoints = create_endpoints(system.platform, receiver, owners, args.endpoints)
        say(f"{len(endpoints)} endpoints on {receiver.url}: " + ", ".join("/".join(e.events) for e in endpoints))

        meter = CpuMeter(bench.pids(), bench.postgres_ids())
        meter.start()
        load = produce(system.platform, owners["editor"], project_id, args.events, args.writers, args.rate)
        expected = expected_pairs(endpoints, load)
        say(f"stored {len(load.events)} events in {load.finished_at - load.started_at:.2f} s; "
            f"{len(expected)} (endpoint, event) pairs to deliver")
        done = wait_delivered(receiver, len(expected), args.timeout, bench.check_roles)
        time.sleep(1.0)  # late duplicates would show up here
        meter.stop()
        check = check_exactly_once(receiver, expected)
        fig = figures(receiver, load)
    receiver.close()

    print()
    print(f"events stored:            {len(load.events)} ({args.writers} writers, "
          f"{len(load.events) / (load.finished_at - load.started_at):.0f} events/s)")
    print(f"endpoints:                {len(endpoints)}; expected deliveries {len(expected)}")
    print(f"deliveries:               {fig['deliveries']:.0f} in {fig['span_s']:.2f} s from the first event: "
          f"{fig['deliveries_per_s']:.0f} deliveries/s")
    print(f"event -> delivery (ms):   p50 {fig['p50_ms']:.0f}  p90 {fig['p90_ms']:.0f}  p99 {fig['p99_ms']:.0f}  "
          f"max {fig['max_ms']:.0f}")
    print(f"exactly once:             missing {len(check['missing'])}, twice {len(check['twice'])}, "
          f"unexpected {len(check['unexpected'])}, failed verification {len(check['forged'])}"
          + ("" if done else f" (gave up after {args.timeout:g} s)"))
    print()
    for line in meter.report(int(fig["deliveries"])):
        print(line)
    if args.profile:
        from bench.common import print_profile

        print_profile(args.profile)
    ok = done and not any(check.values())
    print("EXACTLY ONCE" if ok else "NOT EXACTLY ONCE")
    return 0 if ok else 1


if __name__ == "__main__":
    from bench.common import run_main

    run_main(main)
