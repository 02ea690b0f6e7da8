"""A lean HTTP/1.1 load client: N keep-alive connections on raw asyncio streams, each sending
its requests back to back (closed loop) for a fixed time, shared by both sides of
``bench/compare.py`` so that the client costs the same on each.

Why not httpx: it costs about 2 ms of CPU per request on this machine, as much as the
server under test. Here a request is pre-encoded bytes; the client writes them, reads the
status line and headers up to the blank line, then ``Content-Length`` bytes (or the chunks of
a chunked body), and records the latency. uvloop is used when importable (uvicorn's
``[standard]`` extra brings it).

Library::

    result = run_load("http://127.0.0.1:8000", [encode("POST", "/api/jobs/", headers, body)],
                      connections=8, seconds=10, warmup=2)
    result.rate, result.latency_ms["p99"], result.client_cpu_ms_per_request

Command line (prints a summary, or one JSON object with ``--json``)::

    python -m bench.loadclient http://127.0.0.1:8000 --method POST --path /api/jobs/ \\
        --header 'Authorization: Bearer …' --body '{"project": "…", "type": "tts", …}' \\
        --connections 8 --seconds 10 [--warmup 2] [--paths-file ids.txt] [--json] [--markers]

``--paths-file`` cycles through one path per line (e.g. ``/api/jobs/<id>/``); each
connection starts at a different offset. Requests ``i`` of a connection use template
``(offset + i) % len(templates)``.

Measured window: requests *started* in ``[warmup, warmup + seconds)`` after the start
count; the rate is the number of such requests answered with an expected status
(``--ok``, default any 2xx) divided by ``seconds``. CPU: ``time.process_time()`` of this
process over the measured window (user + system, all threads), in ms per counted request
and in cores. A connection that fails (reset, bad response) is counted as an error of that
kind and reopened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["LoadResult", "encode", "run_load"]


def encode(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"",
           host: str = "127.0.0.1") -> bytes:
    """One HTTP/1.1 keep-alive request as bytes (``Content-Length`` added when there is a body
    or the method is POST/PUT/PATCH)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class BadResponse(Exception):
    """The server's bytes were not an HTTP/1.1 response we understand."""


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; returns ``(status, keep_alive)``. Raises BadResponse / IncompleteReadError."""
    head = await reader.readuntil(b"\r\n\r\n")
    first, _, rest = head.partition(b"\r\n")
    parts = first.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise BadResponse(first[:80].decode("latin-1"))
    status = int(parts[1])
    length = -1
    chunked = False
    keep_alive = parts[0] == b"HTTP/1.1"
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection":
            keep_alive = value.strip().lower() != b"close"
    if chunked:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            await reader.readexactly(size + 2)  # data + CRLF
            if size == 0:
                break
    elif length > 0:
        await reader.readexactly(length)
    elif length < 0 and status not in (204, 304) and not (100 <= status < 200):
        await reader.read()  # body until close
        keep_alive = False
    return status, keep_alive


@dataclass
class LoadResult:
    """What a run measured. Times in ms, rate in requests/s, CPU of the client itself."""

    connections: int
    seconds: float
    requests: int  # started in the measured window and finished (any outcome)
    ok: int  # of those, answered with an expected status
    statuses: dict[str, int]
    rate: float
    latency_ms: dict[str, float]  # of the ok requests: n, mean, p50, p90, p99, max
    client_cpu_s: float
    client_cores: float
    client_cpu_ms_per_request: float
    loop: str
    window: tuple[float, float] = (0.0, 0.0)  # time.time() of the measured window's start and end
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dict(self.__dict__)

    def line(self) -> str:
        """One human line: rate, p50/p99, errors, client CPU."""
        errors = self.requests - self.ok
        lat = self.latency_ms
        return (f"{self.rate:8.1f}/s  p50 {lat['p50']:6.1f}  p90 {lat['p90']:6.1f}  p99 {lat['p99']:6.1f}  "
                f"max {lat['max']:7.1f} ms  errors {errors}  client {self.client_cpu_ms_per_request:.3f} ms CPU/req")


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(1, int(-(-p * len(sorted_values) // 100)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def _summary(values: Sequence[float]) -> dict[str, float]:
    s = sorted(values)
    return {"n": len(s), "mean": (sum(s) / len(s)) if s else float("nan"), "p50": _percentile(s, 50),
            "p90": _percentile(s, 90), "p99": _percentile(s, 99), "max": s[-1] if s else float("nan")}


async def _connection(host: str, port: int, templates: Sequence[bytes], offset: int, t_measure: float,
                      t_stop: float, ok_statuses: frozenset[int] | None, out: dict[str, Any], interval: float) -> None:
    latencies: list[float] = out["latencies"]
    statuses: Counter[str] = out["statuses"]
    clock = time.perf_counter
    n = len(templates)
    i = offset
    reader = writer = None
    while True:
        t0 = clock()
        if t0 >= t_stop:
            break
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            writer.write(templates[i % n])
            i += 1
            status, keep_alive = await _read_response(reader)
            t1 = clock()
            if t0 >= t_measure:
                out["requests"] += 1
                statuses[str(status)] += 1
                if (200 <= status < 300) if ok_statuses is None else (status in ok_statuses):
                    latencies.append((t1 - t0) * 1000.0)
            if not keep_alive:
                writer.close()
                reader = writer = None
            if interval > 0:
                await asyncio.sleep(max(0.0, t0 + interval - clock()))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, BadResponse, ValueError) as exc:
            if t0 >= t_measure:
                out["requests"] += 1
                statuses[type(exc).__name__] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def _run(url: str, templates: Sequence[bytes], connections: int, seconds: float, warmup: float,
               ok_statuses: frozenset[int] | None, on_edge: Callable[[str], None] | None,
               interval: float) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    start = time.perf_counter() + 0.05
    t_measure, t_stop = start + warmup, start + warmup + seconds
    out: dict[str, Any] = {"latencies": [], "statuses": Counter(), "requests": 0}
    marks: dict[str, float] = {}

    async def meter() -> None:
        await asyncio.sleep(max(0.0, t_measure - time.perf_counter()))
        marks["cpu0"], marks["wall0"] = time.process_time(), time.time()
        if on_edge:
            on_edge("measure")
        await asyncio.sleep(max(0.0, t_stop - time.perf_counter()))
        marks["cpu1"], marks["wall1"] = time.process_time(), time.time()
        if on_edge:
            on_edge("stop")

    tasks = [asyncio.create_task(meter())]
    tasks += [asyncio.create_task(_connection(host, port, templates, (c * 7919) % len(templates), t_measure,
                                              t_stop, ok_statuses, out, interval)) for c in range(connections)]
    await asyncio.gather(*tasks)
    cpu = marks["cpu1"] - marks["cpu0"]
    ok = len(out["latencies"])
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    return LoadResult(connections=connections, seconds=seconds, requests=out["requests"], ok=ok,
                      statuses=dict(out["statuses"]), rate=ok / seconds, latency_ms=_summary(out["latencies"]),
                      client_cpu_s=cpu, client_cores=cpu / seconds,
                      client_cpu_ms_per_request=(cpu * 1000 / out["requests"]) if out["requests"] else float("nan"),
                      loop=loop, window=(marks["wall0"], marks["wall1"]))


def run_load(url: str, templates: Sequence[bytes], *, connections: int = 8, seconds: float = 10.0,
             warmup: float = 2.0, ok_statuses: Sequence[int] | None = None,
             on_edge: Callable[[str], None] | None = None, interval: float = 0.0) -> LoadResult:
    """Run ``connections`` closed-loop keep-alive connections against ``url`` (``http://host:port``)
    for ``warmup`` + ``seconds`` and return what the measured ``seconds`` saw. ``templates`` are
    requests made by :func:`encode`, cycled. ``ok_statuses``: the statuses that count (default
    any 2xx). ``on_edge`` is called with ``"measure"`` and ``"stop"`` at the measured window's
    edges (from the event loop: keep it short). ``interval`` > 0 paces each connection: one
    request start per ``interval`` seconds at most (open loop while the server keeps up). Runs
    its own event loop (uvloop if importable); call it from a thread without one."""
    if not templates:
        raise ValueError("no request templates")
    ok = frozenset(ok_statuses) if ok_statuses else None
    coro = _run(url, templates, connections, seconds, warmup, ok, on_edge, interval)
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="http://host:port")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--path", default="/", help="request path (ignored with --paths-file)")
    parser.add_argument("--paths-file", type=Path, help="one path per line, cycled")
    parser.add_argument("--header", action="append", default=[], metavar="'Name: value'")
    parser.add_argument("--body", default="", help="request body (sent with Content-Type: application/json "
                                                   "unless a Content-Type header is given)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--interval", type=float, default=0.0,
                        help="seconds between request starts per connection (default 0: back to back)")
    parser.add_argument("--ok", default="", help="comma-separated statuses that count (default any 2xx)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--markers", action="store_true",
                        help="print 'measure' and 'stop' lines (flushed) at the measured window's edges, so a "
                             "parent process can sample CPU over the same window")
    args = parser.parse_args(argv)
    headers = {}
    for h in args.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    body = args.body.encode()
    if body and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"
    host = urlsplit(args.url).netloc
    paths = ([p.strip() for p in args.paths_file.read_text().splitlines() if p.strip()]
             if args.paths_file else [args.path])
    templates = [encode(args.method, p, headers, body, host) for p in paths]
    ok = [int(s) for s in args.ok.split(",") if s.strip()]
    result = run_load(args.url, templates, connections=args.connections, seconds=args.seconds,
                      warmup=args.warmup, ok_statuses=ok or None, interval=args.interval,
                      on_edge=(lambda edge: print(edge, flush=True)) if args.markers else None)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"{args.method} {paths[0]}{' …' if len(paths) > 1 else ''}  {args.connections} connections, "
              f"{args.seconds:g} s (pid {os.getpid()}, {result.loop} loop)")
        print(f"  statuses {result.statuses}")
        print(f"  {result.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
