"""The processor: a Kafka consumer-group member that claims pending jobs of its types,
runs their engines beside the poll loop, and reports through commands.

Kafka delivers at least once, so a work message is only a hint: the processor loads the
job from the store and claims it with ``StartJob`` at the version it saw (one claimer
wins, ARCHITECTURE.md invariant 3). Offsets are committed after the message is handled.

An idle processor also learns of new work from the store itself (``store_work``: the
store's NOTIFY on every append, then the work events stored since): it claims such a job at
once instead of waiting for the broker, whose delivery to an idle consumer can take up to
its fetch wait (0.5 s, :func:`infra.kafka.make_consumer`). The claim decides, so the work
message Kafka delivers later finds the job running and is committed unused; Kafka stays the
delivery path (and the partitioning) while processors are busy, and for everything a
processor did not hear of. One job runs at a time whichever way it came (``_run_lock``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from commands.context import Actor, Context
from commands.errors import ClaimLost, NotFound
from commands.job import PENDING, Job
from commands.messages import StartJob
from commands.service import Platform
from processors.blobs import BlobAccess
from processors.engines.base import Engine
from processors.membership import Heartbeat, Member, Roster
from processors.run import JobRun, Lease, RunTuning

log = logging.getLogger(__name__)


class Processor:
    """Serves job ``types`` with ``engines``, one job at a time.

    Args:
        platform: the write side (loads and claims jobs, receives reports).
        engines: ``{type: engine}``; engines are loaded at :meth:`run_forever` start.
        consumer_factory: builds a subscribed Kafka consumer (recreated after broker errors).
        blobs: blob storage: input files are read and result files stored through it only.
        processor_id: unique id of this processor (the claim's owner).
        stale_work: ``stale_work(types, exclude)`` answers a work message for the most urgent job of
            ``types`` pending longer than the requeue threshold (read model), or None; such
            work is claimed directly, and when the consumer has been silent meanwhile it is
            recreated, since a consumer of a restarted broker may hear nothing more.
        roster: where its membership row is kept fresh every ``tuning.heartbeat_s`` seconds
            while :meth:`run_forever` runs (see :mod:`processors.membership`).
        store_work: ``store_work(timeout_s)`` waits up to ``timeout_s`` seconds for the store
            to signal an append and answers the work messages (``{job_id, type, version,
            position, priority}``) of the jobs submitted or retried since its last call
            ([] on a timeout); a thread of :meth:`run_forever` claims them while idle.
    """

    def __init__(
        self,
        platform: Platform,
        engines: dict[str, Engine],
        consumer_factory: Callable[[], Any],
        blobs: BlobAccess,
        *,
        processor_id: str,
        tuning: RunTuning | None = None,
        stale_work: Callable[[list[str], list[str]], dict[str, Any] | None] | None = None,
        stale_check_s: float = 10.0,
        slot_guard: Callable[[str], AbstractContextManager[bool]] | None = None,
        limits: Callable[[str], dict[str, Any]] | None = None,
        leases: Callable[[str, int], Lease] | None = None,
        max_run_s: Callable[[str], float] | None = None,
        better_job: Callable[[list[str], str, str], dict[str, Any] | None] | None = None,
        remote_engine: Callable[[Job], Engine | None] | None = None,
        roster: Roster | None = None,
        store_work: Callable[[float], list[dict[str, Any]]] | None = None,
        store_wait_s: float = 5.0,
    ) -> None:
        self.platform, self.engines, self.consumer_factory = platform, engines, consumer_factory
        self.blobs, self.processor_id = blobs, processor_id
        self.tuning = tuning or RunTuning()
        self.stale_work, self.stale_check_s = stale_work, stale_check_s
        self.slot_guard, self.limits, self.leases, self.max_run_s = slot_guard, limits, leases, max_run_s
        self.better_job = better_job
        self.remote_engine = remote_engine
        self._deferred: dict[str, dict[str, Any]] = {}  # job id → work message waiting for a free slot
        self.actor = Actor(id=processor_id, username=None, role="processor")
        self._stop = threading.Event()
        self._consumer: Any = None
        self.completed: list[str] = []  # job ids finished here, newest last (for tests/metrics)
        self.close_engines = True  # False when the engines are shared (tests)
        self.roster = roster
        self.current_job: str | None = None  # the id of the job it runs now
        self._heartbeat: Heartbeat | None = None
        self.store_work, self.store_wait_s = store_work, store_wait_s
        self._run_lock = threading.Lock()  # held while a job is claimed and run (one at a time)

    # -- loop -------------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Load engines, then consume and run jobs until :meth:`stop`."""
        for engine in self.engines.values():
            engine.load()
        if self.roster is not None:
            member = Member(self.processor_id, tuple(self.engines), self.tuning.heartbeat_s)
            self._heartbeat = Heartbeat(self.roster, member, lambda: self.current_job)
            self._heartbeat.start()
        waker: threading.Thread | None = None
        if self.store_work is not None:
            waker = threading.Thread(target=self._follow_store, name=f"store-work-{self.processor_id}", daemon=True)
            waker.start()
        last_message = last_stale_check = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if self.stale_work is not None and now - last_stale_check > self.stale_check_s:
                # Kafka delivers, it does not remember: work pending past the requeue
                # threshold is claimed straight from the read models (the claim decides).
                last_stale_check = now
                stale = None
                if not self._run_lock.locked():
                    try:
                        stale = self.stale_work(list(self.engines), list(self._deferred))
                    except Exception:
                        log.warning("stale-work check failed", exc_info=True)
                if stale is not None:
                    log.info("claiming stale pending job %s outside Kafka", stale["job_id"])
                    self._handle_locked(stale, self._consumer)
                    if now - last_message > max(3 * self.stale_check_s, 15.0):
                        log.warning("stale pending work and a silent consumer: reconnecting to the broker")
                        self._reset_consumer()
                    continue
            try:
                if self._consumer is None:
                    last_message = time.monotonic()  # a new consumer gets time to join
                consumer = self._get_consumer()
                if self._run_lock.locked():  # a job heard of from the store runs: keep the group, take nothing
                    self._poll_paused(consumer)
                    continue
                if consumer.paused():
                    consumer.resume(*consumer.paused())
                batches = consumer.poll(timeout_ms=1000, max_records=1)
                if batches:
                    last_message = time.monotonic()
                for tp, records in batches.items():
                    for record in records:
                        if not self._handle_locked(record.value, consumer):
                            consumer.seek(tp, record.offset)  # busy meanwhile: deliver it again later
                            break
                        consumer.commit()
                if not batches and self._deferred and self._run_lock.acquire(blocking=False):
                    try:
                        self._retry_deferred(consumer)
                    finally:
                        self._run_lock.release()
            except Exception:
                log.exception("processor %s: consumer error; reconnecting", self.processor_id)
                self._reset_consumer()
                self._stop.wait(1.0)
        with self._run_lock:  # a job the store-work thread runs is finished (or handed back)
            pass  # and, _stop being set, it starts no other
        if self._heartbeat is not None:
            self._heartbeat.stop()  # a clean stop: the row goes
        self._reset_consumer()
        if self.close_engines:
            for engine in self.engines.values():
                engine.close()

    def _handle_locked(self, message: dict[str, Any], consumer: Any) -> bool:
        """:meth:`handle` ``message`` unless a job already runs here; whether it was handled."""
        if not self._run_lock.acquire(blocking=False):
            return False
        if self._stop.is_set():
            self._run_lock.release()
            return False
        try:
            self.handle(message, consumer)
        finally:
            self._run_lock.release()
        return True

    def _poll_paused(self, consumer: Any) -> None:
        """Poll with every partition paused (group membership kept); records of a partition
        assigned meanwhile are sought back, to be delivered once the job is done."""
        consumer.pause(*consumer.assignment())
        for tp, records in consumer.poll(timeout_ms=200).items():
            if records:
                consumer.seek(tp, records[0].offset)

    def _follow_store(self) -> None:
        """The ``store_work`` thread: claim work the store announces while no job runs here
        (a busy processor leaves it to Kafka and to the other processors)."""
        assert self.store_work is not None
        failures = 0
        while not self._stop.is_set():
            try:
                messages = self.store_work(self.store_wait_s)
                failures = 0
            except Exception:
                failures += 1
                log.warning("following the store for work failed", exc_info=failures == 1)
                self._stop.wait(min(0.5 * failures, 5.0))
                continue
            for message in messages:
                if not self._handle_locked(message, None):
                    break
        close = getattr(self.store_work, "close", None)
        if close is not None:
            close()

    def stop(self) -> None:
        """Ask the loop to return after the current job."""
        self._stop.set()

    def _get_consumer(self) -> Any:
        if self._consumer is None:
            self._consumer = self.consumer_factory()
        return self._consumer

    def _reset_consumer(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:
                log.debug("closing consumer failed", exc_info=True)
            self._consumer = None

    # -- one message ----------------------------------------------------------------------------

    def handle(self, message: dict[str, Any], consumer: Any = None) -> str | None:
        """Claim and run the job of a work message; returns its final status, or None when
        the message was stale (job unknown, not pending, or claimed by someone else)."""
        job_type = message.get("type")
        engine = self.engines.get(str(job_type))
        if engine is None:
            return None
        job_id = UUID(str(message["job_id"]))
        try:
            job = self.platform.get_job(job_id)
        except NotFound:
            return None
        if job.status != PENDING or job.demo:  # demo jobs (aiorch seed --demo) are never run
            return None
        if job.not_before and datetime.fromisoformat(job.not_before) > datetime.now(UTC):
            self._deferred[str(job_id)] = message  # retry backoff: claim it when it is due
            return None
        if self.better_job is not None and not message.get("preferred"):
            better = self.better_job(list(self.engines), job.priority, str(job_id))
            if better is not None:  # a higher-priority job waits: run it first
                self._deferred[str(job_id)] = message
                return self.handle({**better, "preferred": True}, consumer)
        ctx = Context(self.actor, f"run-{job_id}-{job.attempt}")
        with self.slot_guard(job.owner_id) if self.slot_guard else nullcontext(True) as has_slot:
            if not has_slot:  # the owner's max_concurrent_jobs run already: wait pending
                self._deferred[str(job_id)] = message
                return None
            self._deferred.pop(str(job_id), None)
            try:
                self.platform.start_job(StartJob(job_id, job.version, self.processor_id), ctx)
            except ClaimLost:
                return None
            # take the lease at once: the reaper gives a claim without one a lease's grace
            lease = self.leases(str(job_id), job.attempt) if self.leases else None
        job = self.platform.get_job(job_id)
        if self.remote_engine is not None:  # the job's agent names a remote provider: run it there
            engine = self.remote_engine(job) or engine
        limits = self.limits(job.owner_id) if self.limits else {}
        tuning = replace(self.tuning, max_run_s=self.max_run_s(job.type)) if self.max_run_s else self.tuning
        run = JobRun(self.platform, job, engine, ctx, self.blobs, tuning, limits, lease, self._stop)
        self._set_current(str(job_id))
        try:
            status = self._run_beside_poll(run, consumer)
        finally:
            self._set_current(None)
        self.completed.append(str(job_id))
        log.info("job %s (%s) %s on %s", job_id, job_type, status, self.processor_id)
        return status

    def _set_current(self, job_id: str | None) -> None:
        self.current_job = job_id
        if self._heartbeat is not None:
            self._heartbeat.poke()

    def _retry_deferred(self, consumer: Any) -> None:
        """Try again the work that waited for its owner's free slot (oldest first)."""
        for job_id, message in list(self._deferred.items()):
            self._deferred.pop(job_id, None)
            if self.handle(message, consumer) is not None:
                return  # ran one job: poll Kafka again before the next

    def _run_beside_poll(self, run: JobRun, consumer: Any) -> str:
        """Run the job in a thread while the consumer keeps polling with its partitions
        paused, so long work never blocks group membership."""
        outcome: list[str] = []
        thread = threading.Thread(target=lambda: outcome.append(run.execute()), name=f"job-{run.job_id}", daemon=True)
        thread.start()
        while thread.is_alive():
            if consumer is None:
                thread.join(0.2)
                continue
            try:
                consumer.pause(*consumer.assignment())
                for tp, records in consumer.poll(timeout_ms=200).items():
                    if records:  # arrived from a partition assigned meanwhile: deliver later
                        consumer.seek(tp, records[0].offset)
            except Exception:
                log.debug("polling while busy failed", exc_info=True)
                thread.join(0.2)
        if consumer is not None:
            try:
                consumer.resume(*consumer.paused())
            except Exception:
                log.debug("resume failed", exc_info=True)
        return outcome[0] if outcome else "failed"
