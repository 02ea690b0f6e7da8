"""Read-model rebuild throughput over a large event store (default 100,000 events).

1. Fills a fresh store fast through the real write side: ``--jobs`` jobs (default one per
   500 events) are submitted and started (``platform.submit_job`` / ``start_job``), then each
   job aggregate records many events in memory (``report_progress`` and, every
   ``--log-every``-th event, ``append_logs`` with two lines) and is saved ``--per-save``
   events at a time (default 500) with one ``platform.save``. Prints the append rate.
2. Incremental catch-up (skip with ``--no-catchup``): starts the live projector as its own
   process (``python -m infra.cli projector`` through :mod:`bench.role`, production batch
   size) on the full store and times how long its tracking position takes to reach the
   head: events/s from its first committed batch and from process start.
3. Rebuild: times ``projections.operations.rebuild(...)`` end to end (new generation built
   beside the serving one, views switched, the old generation dropped; the live projector
   keeps running and follows the switch), in this process, with the default batch size
   (``--batch-size`` to change). Reports events/s of the build phase (until caught up) and of
   the whole call (which includes a fixed 1 s grace period after the switch), against the
   issue 10's target 5: ≥ 60 % of a batched upsert's rate (step 4).
4. Batched upsert, the comparator (issue 10, target 5), in the same run, beside each rebuild:
   the rows the rebuild writes, computed beforehand (not timed) with the pure folds the
   projector uses (``job_row`` for every job event, ``log_rows`` for every JobLogsAppended),
   one job row per event (no merging within a batch), written into a fresh generation's
   tables (``rm_jobs_gN``, ``rm_job_logs_gN``: the same tables, indexes and column types)
   with plain psycopg: per ``--batch-size`` events one transaction, one ``executemany`` of
   ``INSERT … ON CONFLICT (id) DO UPDATE`` for the job rows and one of ``INSERT … ON CONFLICT
   (position, seq) DO UPDATE`` for the log lines (psycopg pipelines an ``executemany``).
   Its rate is those events over the wall time; the rebuild's build-phase rate is printed
   as a ratio of it (goal ≥ 0.60). ``--repeat`` alternates upsert and rebuild runs; the
   best of each counts.
5. ``--profile``: a second rebuild under cProfile (about twice as slow; reported separately;
   use ``--events 20000 --profile`` for a quick look) and its top functions by own and
   cumulative time.

CPU per process (this process runs the rebuild; PostgreSQL's backends for this database)
is printed for the catch-up and for each rebuild, in ms per event.

    /work/venv/bin/python bench/bench_rebuild.py [--events 100000] [--per-save 500] [--profile] [--json out.json]

Exits 0 whether or not the target is met; 2 when the services could not be set up.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    BenchSystem,
    CpuMeter,
    Role,
    SetupError,
    print_profile,
    run_main,
    say,
    target_entry,
    warn_if_busy,
    write_summary,
)

TARGET_RATIO = 0.60  # issue 10, target 5: rebuild ≥ 60 % of a batched upsert's rate
SCRATCH_GENERATION = 900  # the batched upsert's tables: rm_jobs_g900, rm_job_logs_g900


def processor_context() -> Any:
    """A command context acting as a processor (processors report progress and logs)."""
    from commands.context import Actor, Context

    return Context(Actor(id="bench-processor", username=None, role="processor"), f"bench-run-{uuid.uuid4()}")


def running_job(bench: BenchSystem, project: str, editor: str) -> uuid.UUID:
    """Submit a tts job as ``editor`` and start it; returns its id (2 events)."""
    from commands.messages import StartJob, SubmitJob

    platform = bench.sys.platform
    job_id, _ = platform.submit_job(
        SubmitJob(uuid.UUID(project), "tts", {"text": "Rebuild benchmark sentence."}), bench.actor_context(editor)
    )
    version = platform.get_job(job_id).version
    platform.start_job(StartJob(job_id, version, "bench-processor"), processor_context())
    return job_id


def fill_job(bench: BenchSystem, job_id: uuid.UUID, events: int, per_save: int, log_every: int = 10) -> int:
    """Append ``events`` events to a running job, ``per_save`` per ``platform.save``:
    JobProgressed, and every ``log_every``-th a JobLogsAppended of two lines. Returns the
    position of the last event."""
    from commands.context import acting_as

    platform = bench.sys.platform
    ctx = processor_context()
    job = platform.get_job(job_id)
    position = 0
    done = 0
    while done < events:
        n = min(per_save, events - done)
        with acting_as(ctx):
            for i in range(done, done + n):
                if log_every and i % log_every == log_every - 1:
                    at = datetime.now(UTC).isoformat()
                    job.append_logs(
                        [
                            {"at": at, "level": "info", "message": f"step {i}: chunk decoded"},
                            {"at": at, "level": "info", "message": f"step {i}: chunk written"},
                        ]
                    )
                else:
                    job.report_progress(min(99, i * 100 // max(events, 1)), f"step {i // 50}")
        recordings = platform.save(job)
        position = recordings[-1].notification.id
        done += n
    return position


def fill_store(bench: BenchSystem, total: int, jobs: int, per_save: int, log_every: int) -> float:
    """Fill the store with about ``total`` events over ``jobs`` running jobs; returns the
    seconds it took."""
    bench.create_user("bench-editor", "editor")
    project = bench.create_project("bench-editor")
    jobs = max(1, jobs)
    base = bench.max_position()
    per_job = max(0, (total - base - 2 * jobs) // jobs)
    extra = max(0, total - base - 2 * jobs - per_job * jobs)
    t0 = time.perf_counter()
    last_report = t0
    for j in range(jobs):
        job_id = running_job(bench, project, "bench-editor")
        fill_job(bench, job_id, per_job + (1 if j < extra else 0), per_save, log_every)
        if time.perf_counter() - last_report > 5:
            last_report = time.perf_counter()
            head = bench.max_position()
            say(f"  appended {head:,} events ({head / (last_report - t0):,.0f}/s)")
    return time.perf_counter() - t0


def catch_up(bench: BenchSystem, timeout: float) -> tuple[Role, dict[str, float]]:
    """Start the live projector process on the filled store and time its catch-up."""
    head = bench.max_position()
    table, name = bench.tracking_row()
    import psycopg
    from psycopg import sql

    from infra.db import conninfo

    started = time.perf_counter()
    role = Role("projector", ["projector"], bench.role_env(), bench.tmp / "projector.log")
    bench.roles["projector"] = role  # stopped with the bench
    meter = CpuMeter({"projector": role.pid}, bench.postgres_ids())
    meter.start()
    query = sql.SQL("SELECT position FROM {} WHERE name = %s").format(sql.Identifier(table))
    first: tuple[float, int] | None = None
    last_say = started
    with psycopg.connect(conninfo(bench.database_url), autocommit=True) as conn:
        while True:
            row = conn.execute(query, (name,)).fetchone()
            now = time.perf_counter()
            position = int(row[0]) if row else 0
            if position and first is None:
                first = (now, position)
            if position >= head:
                break
            role.check()
            if now - started > timeout:
                raise SetupError(f"the projector did not catch up within {timeout} s (at {position} of {head})")
            if now - last_say > 5:
                last_say = now
                say(f"  projector at {position:,} of {head:,}")
            time.sleep(0.02)
    done = time.perf_counter()
    meter.stop()
    print("  CPU during the catch-up:")
    for line in meter.report(head):
        print(f"    {line}")
    assert first is not None
    from_first = (head - first[1]) / (done - first[0]) if done > first[0] else float("nan")
    return role, {
        "head": head,
        "total_s": done - started,
        "events_s_total": head / (done - started),
        "from_first_s": done - first[0],
        "events_s_from_first": from_first,
        "first_batch": first[1],
    }


def timed_rebuild(bench: BenchSystem, batch_size: int, label: str) -> dict[str, Any]:
    """Run ``rebuild`` once; returns timings."""
    from projections.operations import rebuild

    system = bench.sys
    marks: dict[str, float] = {}
    last = [time.perf_counter()]

    def progress(position: int, head: int, applied: int) -> None:
        now = time.perf_counter()
        if position >= head:
            marks.setdefault("caught_up", now)
            marks.setdefault("applied", applied)
        if now - last[0] > 5:
            last[0] = now
            say(f"  {label}: {applied:,} applied, at {position:,} of {head:,} ({applied / (now - t0):,.0f}/s)")

    head = bench.max_position()
    meter = CpuMeter(bench.pids(), bench.postgres_ids())
    meter.start()
    t0 = time.perf_counter()
    generation = rebuild(
        system.engine, system.platform.recorder, system.platform.mapper.to_domain_event, batch_size=batch_size, progress=progress
    )
    t1 = time.perf_counter()
    meter.stop()
    print(f"  CPU during {label} (the rebuild runs in this process; the live projector only follows):")
    for line in meter.report(head):
        print(f"    {line}")
    extra = {"other_cores": meter.other_cores(), "cpu": meter.as_dict(head)}
    build_s = marks.get("caught_up", t1) - t0
    applied = marks.get("applied", head)
    return {
        "generation": generation,
        "head": head,
        "applied": applied,
        "build_s": build_s,
        "total_s": t1 - t0,
        "build_events_s": applied / build_s,
        "total_events_s": applied / (t1 - t0),
        **extra,
    }


def _adapt(value: Any) -> Any:
    """A row value as psycopg sends it: dicts and lists as JSONB, enums as their value."""
    from enum import Enum

    from psycopg.types.json import Jsonb

    if isinstance(value, dict | list):
        return Jsonb(value)
    if isinstance(value, Enum):
        return value.value
    return value


Batch = tuple[int, list[tuple[Any, ...]], list[tuple[Any, ...]]]  # (events, job rows, log rows)


def upsert_batches(bench: BenchSystem, batch_size: int) -> tuple[list[Batch], list[str]]:
    """The rows the rebuild writes, per batch of ``batch_size`` stored events, computed with
    the projector's pure folds: ``[(events in the batch, job rows, log rows)]`` (one job
    row per job event, as the row stands right after it) and the job columns. Not timed."""
    from events import JobLogsAppended
    from projections.readmodels import JobRow, job_row
    from projections.readmodels.job_row import JOB_EVENTS
    from projections.readmodels.logs import log_rows

    recorder, decode = bench.sys.platform.recorder, bench.sys.platform.mapper.to_domain_event
    columns = list(JobRow.__dataclass_fields__)
    rows: dict[str, Any] = {}
    batches: list[Batch] = []
    position = 0
    while True:
        notifications = recorder.select_notifications(position, batch_size, inclusive_of_start=False)
        if not notifications:
            break
        jobs: list[tuple[Any, ...]] = []
        logs: list[tuple[Any, ...]] = []
        for n in notifications:
            event = decode(n)
            if not isinstance(event, JOB_EVENTS):
                continue  # users, sessions, projects: a handful of set-up events
            key = str(event.originator_id)
            row = rows[key] = job_row(rows.get(key), event, n.id)
            jobs.append(tuple(_adapt(getattr(row, c)) for c in columns))
            if isinstance(event, JobLogsAppended):
                logs += [(r["job_id"], r["position"], r["seq"], r["at"], r["level"], r["message"]) for r in log_rows(event, n.id)]
        batches.append((len(notifications), jobs, logs))
        position = notifications[-1].id
    return batches, columns


def batched_upsert(bench: BenchSystem, batches: list[Batch], columns: list[str], label: str) -> dict[str, Any]:
    """Write ``batches`` into a fresh generation's job and log tables (see the module's step
    4), one transaction per batch; returns timings. The tables are dropped afterwards."""
    import psycopg

    from infra.db import conninfo
    from projections import tables as t
    from projections.generations import create_generation

    tables = t.generation(SCRATCH_GENERATION)
    tables.metadata.drop_all(bench.sys.engine)
    create_generation(bench.sys.engine, SCRATCH_GENERATION)
    cols = ", ".join(columns)
    jobs_sql = (
        f'INSERT INTO "{tables.jobs.name}" ({cols}) VALUES ({", ".join(["%s"] * len(columns))}) '
        f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in columns if c != 'id')}"
    )
    logs_sql = (
        f'INSERT INTO "{tables.job_logs.name}" (job_id, position, seq, at, level, message) VALUES (%s, %s, %s, %s, %s, %s) '
        "ON CONFLICT (position, seq) DO UPDATE SET job_id = EXCLUDED.job_id, at = EXCLUDED.at, level = EXCLUDED.level, "
        "message = EXCLUDED.message"
    )
    events = sum(b[0] for b in batches)
    job_rows = sum(len(b[1]) for b in batches)
    log_lines = sum(len(b[2]) for b in batches)
    meter = CpuMeter(bench.pids(), bench.postgres_ids())
    try:
        with psycopg.connect(conninfo(bench.database_url)) as conn:
            meter.start()
            t0 = time.perf_counter()
            last = t0
            done = 0
            for n, jobs, logs in batches:
                with conn.cursor() as cur:
                    if jobs:
                        cur.executemany(jobs_sql, jobs)
                    if logs:
                        cur.executemany(logs_sql, logs)
                conn.commit()
                done += n
                if time.perf_counter() - last > 5:
                    last = time.perf_counter()
                    say(f"  {label}: {done:,} events upserted ({done / (last - t0):,.0f}/s)")
            t1 = time.perf_counter()
            meter.stop()
            written = conn.execute(f'SELECT count(*) FROM "{tables.jobs.name}"').fetchone()
    finally:
        tables.metadata.drop_all(bench.sys.engine)
    print(f"  CPU during {label} (this process sends the rows):")
    for line in meter.report(events):
        print(f"    {line}")
    return {"events": events, "job_rows": job_rows, "log_lines": log_lines, "jobs_in_table": written[0] if written else 0,
            "seconds": t1 - t0, "events_s": events / (t1 - t0), "other_cores": meter.other_cores(),
            "cpu": meter.as_dict(events)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events in the store (default 100,000)")
    parser.add_argument("--jobs", type=int, default=0, help="jobs the events are spread over (default events/500)")
    parser.add_argument("--per-save", type=int, default=500, help="events per platform.save while filling (default 500)")
    parser.add_argument(
        "--log-every",
        type=int,
        default=10,
        help="every N-th event is a JobLogsAppended of 2 lines, others JobProgressed (default 10; 0: none)",
    )
    parser.add_argument("--batch-size", type=int, default=0, help="rebuild batch size (default: rebuild()'s own default)")
    parser.add_argument("--repeat", type=int, default=1, help="timed rebuilds (default 1)")
    parser.add_argument("--no-catchup", action="store_true", help="skip the live projector catch-up measurement")
    parser.add_argument("--profile", action="store_true", help="one more rebuild under cProfile, top functions printed")
    parser.add_argument("--profile-dir", type=Path, default=Path("/tmp/aiorch-bench-profiles"))  # noqa: S108
    parser.add_argument("--no-upsert", action="store_true", help="skip the batched-upsert comparator")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write a summary for bench/targets.py")
    args = parser.parse_args()

    import inspect

    from projections.operations import rebuild

    batch_size = args.batch_size or int(inspect.signature(rebuild).parameters["batch_size"].default)
    load0 = os.getloadavg()
    say(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} ({os.cpu_count()} cores)")
    other_before = warn_if_busy()
    with BenchSystem(api=False, projector=False, relay=False) as bench:
        jobs = args.jobs or max(1, args.events // 500)
        say(f"filling the store: ~{args.events:,} events over {jobs} jobs, {args.per_save} per save")
        fill_s = fill_store(bench, args.events, jobs, args.per_save, args.log_every)
        head = bench.max_position()
        say(f"store filled: {head:,} events in {fill_s:.1f} s ({head / fill_s:,.0f} events/s appended)")

        catch: dict[str, float] | None = None
        if not args.no_catchup:
            say("starting the live projector process on the full store (incremental catch-up)")
            _role, catch = catch_up(bench, timeout=max(120.0, args.events / 500))
            say(
                f"projector caught up: {catch['head']:,} events in {catch['total_s']:.1f} s from process start "
                f"({catch['events_s_total']:,.0f}/s); {catch['events_s_from_first']:,.0f}/s from its first batch"
            )

        upserts: list[dict[str, Any]] = []
        batches: list[Any] = []
        columns: list[str] = []
        if not args.no_upsert:
            say(f"computing the rows of the batched upsert (job_row / log_rows folds, batches of {batch_size} events)")
            batches, columns = upsert_batches(bench, batch_size)
        results = []
        for i in range(args.repeat):
            if batches:
                say(f"batched upsert {i + 1}/{args.repeat}")
                u = batched_upsert(bench, batches, columns, f"upsert {i + 1}")
                upserts.append(u)
                say(f"upsert {i + 1}: {u['events']:,} events ({u['job_rows']:,} job rows, {u['log_lines']:,} log lines) "
                    f"in {u['seconds']:.2f} s ({u['events_s']:,.0f} events/s)")
            say(f"rebuild {i + 1}/{args.repeat} (batch size {batch_size})")
            r = timed_rebuild(bench, batch_size, f"rebuild {i + 1}")
            results.append(r)
            say(
                f"rebuild {i + 1}: generation {r['generation']}, {r['applied']:,} events, build {r['build_s']:.2f} s "
                f"({r['build_events_s']:,.0f}/s), whole call {r['total_s']:.2f} s ({r['total_events_s']:,.0f}/s)"
            )
        if catch is not None:  # the live projector must follow the switch
            bench.wait_projected(bench.max_position(), 30)

        profiled: dict[str, Any] | None = None
        prof_path = args.profile_dir / "rebuild.prof"
        if args.profile:
            args.profile_dir.mkdir(parents=True, exist_ok=True)
            say("rebuild under cProfile")
            profiler = cProfile.Profile()
            profiler.enable()
            profiled = timed_rebuild(bench, batch_size, "profiled rebuild")
            profiler.disable()
            profiler.dump_stats(str(prof_path))
    load1 = os.getloadavg()

    best = max(results, key=lambda r: r["build_events_s"])
    print()
    print(
        f"read-model rebuild  ({head:,} events: {jobs} jobs, JobProgressed"
        f"{f' + every {args.log_every}th JobLogsAppended' if args.log_every else ''}; batch size {batch_size})"
    )
    print(f"  append (fill)        {head / fill_s:10,.0f} events/s  ({args.per_save} events per save)")
    if catch is not None:
        print(
            f"  live projector       {catch['events_s_from_first']:10,.0f} events/s from its first batch; "
            f"{catch['events_s_total']:,.0f}/s incl. process start ({catch['total_s']:.1f} s)"
        )
    for i, r in enumerate(results, 1):
        print(
            f"  rebuild {i}            {r['build_events_s']:10,.0f} events/s build phase ({r['build_s']:.2f} s); "
            f"{r['total_events_s']:,.0f}/s whole call ({r['total_s']:.2f} s, incl. 1 s grace + drop)"
        )
    if profiled:
        print(f"  rebuild (cProfile)   {profiled['build_events_s']:10,.0f} events/s build phase (profiler overhead included)")
    print(
        f"  load average         start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; "
        f"end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} ({os.cpu_count()} cores)"
    )
    best_upsert = max(upserts, key=lambda u: u["events_s"]) if upserts else None
    for i, u in enumerate(upserts, 1):
        print(
            f"  batched upsert {i}     {u['events_s']:10,.0f} events/s ({u['seconds']:.2f} s: {u['job_rows']:,} job rows + "
            f"{u['log_lines']:,} log lines, executemany per {batch_size} events)"
        )
    ratio = best["build_events_s"] / best_upsert["events_s"] if best_upsert else None
    met = ratio is not None and ratio >= TARGET_RATIO
    if ratio is not None:
        print(
            f"  target rebuild ≥ {TARGET_RATIO:.2f}× the batched upsert (build phase): {ratio:.2f}× "
            f"({'MET' if met else 'NOT MET'}); whole call {best['total_events_s'] / best_upsert['events_s']:.2f}×"  # type: ignore[index]
        )
    rebuild_cpu = best.get("cpu", {})
    entry = target_entry(
        5, f"rebuild of {head:,} events (build phase)", best["build_events_s"], "events/s",
        f"≥ {TARGET_RATIO:.2f}× batched upsert", met, comparator=best_upsert["events_s"] if best_upsert else None,
        comparator_name="batched upsert (executemany ON CONFLICT), same run" if best_upsert else None, ratio=ratio,
        details={"rebuild_whole_call_events_s": best["total_events_s"], "rebuild_s": best["build_s"],
                 "upsert": {k: v for k, v in best_upsert.items() if k != "cpu"} if best_upsert else None,
                 "append_events_s": head / fill_s,
                 "live_projector_events_s": catch["events_s_from_first"] if catch else None, "batch_size": batch_size,
                 "rebuild_cpu": rebuild_cpu, "upsert_cpu": best_upsert["cpu"] if best_upsert else None})
    others = [r.get("other_cores", 0.0) for r in results] + [u["other_cores"] for u in upserts]
    write_summary(args.json, "bench_rebuild.py", [entry], max(others, default=None), rebuild_cpu, other_before=other_before)
    if args.profile:
        print_profile(prof_path)
    return 0


if __name__ == "__main__":
    run_main(main)
