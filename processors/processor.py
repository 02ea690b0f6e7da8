"""The processor: a Kafka consumer-group member that claims pending jobs of its types,
runs their engines beside the poll loop, and reports through commands.

Kafka delivers at least once, so a work message is only a hint: the processor loads the
job from the store and claims it with ``StartJob`` at the version it saw (one claimer
wins, ARCHITECTURE.md invariant 3). Offsets are committed after the message is handled,
or once a record that never can be is dead-lettered (:mod:`processors.error_policy`).

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
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from commands.context import Actor, Context
from commands.errors import ClaimLost, NotFound
from commands.job import PENDING, Job
from commands.messages import StartJob
from processors.claims import Slot, WorkMessage, is_due
from processors.deps import ProcessorPolicies, ProcessorPorts, ProcessorTuning
from processors.engines.base import Engine
from processors.error_policy import RecordErrors
from processors.job_run import JobRun, Lease
from processors.membership import Heartbeat, Member
from processors.work_messages import parse_work_message

log = logging.getLogger(__name__)


@dataclass
class _Clock:
    """When the consumer last heard a record, and when stale work was last looked for
    (``time.monotonic()`` seconds)."""

    last_message: float
    last_stale_check: float


class Processor:
    """Serves job ``types`` with ``engines``, one job at a time.

    Args:
        engines: ``{type: engine}``; engines are loaded at :meth:`run_forever` start.
        ports: what it talks to (the store, blobs, Kafka, leases, its roster, ...).
        processor_id: unique id of this processor (the claim's owner).
        policies: claims, the per-record error policy, the owner's limits.
        tuning: its timings.

    Stale work (:meth:`processors.claims.ClaimPolicy.stale_work`: pending longer than the
    requeue threshold) is claimed straight from the read models every
    ``tuning.stale_check_s``; when the consumer has been silent meanwhile it is recreated,
    since a consumer of a restarted broker may hear nothing more. Records that cannot be
    handled follow ``policies.errors`` (:class:`processors.error_policy.RecordErrors`, whose
    ``counter`` counts the dead letters).
    """

    def __init__(
        self,
        engines: dict[str, Engine],
        ports: ProcessorPorts,
        *,
        processor_id: str,
        policies: ProcessorPolicies | None = None,
        tuning: ProcessorTuning | None = None,
    ) -> None:
        self.engines, self.ports, self.processor_id = engines, ports, processor_id
        self.platform = ports.platform
        self.policies = policies or ProcessorPolicies()
        self.tuning = tuning or ProcessorTuning()
        self._deferred: dict[str, WorkMessage] = {}  # job id → work message waiting (slot, backoff, priority)
        self.actor = Actor(id=processor_id, username=None, role="processor")
        self._stop = threading.Event()
        self._consumer: Any = None
        self.completed: list[str] = []  # job ids finished here, newest last (for tests/metrics)
        self.close_engines = True  # False when the engines are shared (tests)
        self.current_job: str | None = None  # the id of the job it runs now
        self._heartbeat: Heartbeat | None = None
        self._run_lock = threading.Lock()  # held while a job is claimed and run (one at a time)
        self.errors = RecordErrors(self.policies.errors, ports.invalid_messages, processor_id)

    # -- loop -------------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Load engines, then consume and run jobs until :meth:`stop`."""
        self._start()
        clock = _Clock(time.monotonic(), time.monotonic())
        while not self._stop.is_set():
            if self._claim_stale(clock):
                continue
            try:
                self._poll_once(clock)
            except Exception:
                log.exception("processor %s: consumer error; reconnecting", self.processor_id)
                self._reset_consumer()
                self._stop.wait(1.0)
        self._shutdown()

    def _start(self) -> None:
        for engine in self.engines.values():
            engine.load()
        if self.ports.roster is not None:
            member = Member(self.processor_id, tuple(self.engines), self.tuning.run.heartbeat_s)
            self._heartbeat = Heartbeat(self.ports.roster, member, lambda: self.current_job)
            self._heartbeat.start()
        if self.ports.store_work is not None:
            name = f"store-work-{self.processor_id}"
            threading.Thread(target=self._follow_store, name=name, daemon=True).start()

    def _shutdown(self) -> None:
        with self._run_lock:  # a job the store-work thread runs is finished (or handed back)
            pass  # and, _stop being set, it starts no other
        if self._heartbeat is not None:
            self._heartbeat.stop()  # a clean stop: the row goes
        self._reset_consumer()
        if self.policies.claims is not None:
            self.policies.claims.close()
        if self.close_engines:
            for engine in self.engines.values():
                engine.close()

    def _claim_stale(self, clock: _Clock) -> bool:
        """Kafka delivers, it does not remember: every ``stale_check_s``, work pending past
        the requeue threshold is claimed straight from the read models (the claim decides).
        Whether it claimed some."""
        claims, now = self.policies.claims, time.monotonic()
        if claims is None or now - clock.last_stale_check <= self.tuning.stale_check_s:
            return False
        clock.last_stale_check = now
        if self._run_lock.locked():
            return False
        try:
            stale = claims.stale_work(list(self.engines), list(self._deferred))
            if stale is None:
                return False
            log.info("claiming stale pending job %s outside Kafka", stale["job_id"])
            self._handle_locked(stale, self._consumer)
        except Exception:
            log.warning("stale-work check failed", exc_info=True)
            return False
        if now - clock.last_message > max(3 * self.tuning.stale_check_s, 15.0):
            log.warning("stale pending work and a silent consumer: reconnecting to the broker")
            self._reset_consumer()
        return True

    def _poll_once(self, clock: _Clock) -> None:
        """One poll of the consumer: handle (at most) one record and commit past it, or try
        the deferred work again when nothing came."""
        if self._consumer is None:
            clock.last_message = time.monotonic()  # a new consumer gets time to join
        consumer = self._get_consumer()
        if self._run_lock.locked():  # a job heard of from the store runs: keep the group, take nothing
            self._poll_paused(consumer)
            return
        if consumer.paused():
            consumer.resume(*consumer.paused())
        batches = consumer.poll(timeout_ms=1000, max_records=1)
        if batches:
            clock.last_message = time.monotonic()
        for tp, records in batches.items():
            for record in records:
                if not self._process(record, consumer):
                    consumer.seek(tp, record.offset)  # busy, or failing for now: deliver it again later
                    break
                consumer.commit()
        if not batches and self._deferred and self._run_lock.acquire(blocking=False):
            try:
                self._retry_deferred(consumer)
            finally:
                self._run_lock.release()

    # -- one record -------------------------------------------------------------------------

    def _process(self, record: Any, consumer: Any) -> bool:
        """Handle one Kafka record; whether to commit past it (False: deliver it again)."""
        try:
            message = parse_work_message(record.value, self.engines)
            if not self._handle_locked(message, consumer):
                return False
        except Exception as exc:  # noqa: BLE001 - the error policy decides, and logs
            return self.on_processing_error(record, exc)
        self.errors.succeeded()
        return True

    def on_processing_error(self, record: Any, exc: BaseException) -> bool:
        """:attr:`errors` applied to ``record``, whose handling raised ``exc``: whether to
        commit past it (dead-lettered) or not (delivered again after a backoff)."""
        return self.errors.on_processing_error(record, exc, self._stop.wait)

    def _handle_locked(self, message: WorkMessage, consumer: Any) -> bool:
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
        store_work = self.ports.store_work
        assert store_work is not None
        failures = 0
        while not self._stop.is_set():
            try:
                messages = store_work(self.tuning.store_wait_s)
                failures = 0
            except Exception:
                failures += 1
                log.warning("following the store for work failed", exc_info=failures == 1)
                self._stop.wait(min(0.5 * failures, 5.0))
                continue
            for message in messages:
                if not self._handle_locked(message, None):
                    break
        store_work.close()

    def stop(self) -> None:
        """Ask the loop to return after the current job."""
        self._stop.set()

    def _get_consumer(self) -> Any:
        if self._consumer is None:
            self._consumer = self.ports.consumer_factory()
        return self._consumer

    def _reset_consumer(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:
                log.debug("closing consumer failed", exc_info=True)
            self._consumer = None

    # -- one message ----------------------------------------------------------------------------

    def handle(self, message: WorkMessage, consumer: Any = None) -> str | None:
        """Claim and run the job of a work message; returns its final status, or None when
        the message was stale (job unknown, not pending, or claimed by someone else) or the
        job must wait (its backoff, a more urgent job, its owner's slots).

        Raises what loading or claiming raises (the store unreachable; a malformed message)."""
        engine = self.engines.get(str(message.get("type")))
        if engine is None:
            return None
        job_id = UUID(str(message["job_id"]))
        try:
            job = self.platform.get_job(job_id)
        except NotFound:
            return None
        if job.status != PENDING or job.demo:  # demo jobs (aiorch seed --demo) are never run
            return None
        if not is_due(job.not_before):
            self._deferred[str(job_id)] = message  # retry backoff: claim it when it is due
            return None
        claims = self.policies.claims
        if claims is not None and not message.get("preferred"):
            better = claims.better_job(list(self.engines), job.priority, str(job_id))
            if better is not None:  # a higher-priority job waits: run it first
                self._deferred[str(job_id)] = message
                return self.handle({**better, "preferred": True}, consumer)
        claimed = self._claim(job, message)
        if claimed is None:
            return None
        return self._run(job_id, engine, *claimed, consumer)

    def _claim(self, job: Job, message: WorkMessage) -> tuple[Context, Lease | None] | None:
        """Claim ``job`` (``StartJob`` at the version it was loaded at) and take its lease, in
        its owner's slot; None when the owner has no free slot or another processor won."""
        ctx = Context(self.actor, f"run-{job.id}-{job.attempt}")
        claims = self.policies.claims
        with claims.slot(job.owner_id) if claims is not None else nullcontext(Slot(free=True)) as slot:
            if not slot.free:  # the owner's max_concurrent_jobs run already: wait pending
                self._deferred[str(job.id)] = message
                return None
            self._deferred.pop(str(job.id), None)
            try:
                slot.claimed_at = self.platform.start_job(StartJob(job.id, job.version, self.processor_id), ctx)
            except ClaimLost:
                return None
            # take the lease at once: the reaper gives a claim without one a lease's grace
            lease = self.ports.leases(str(job.id), job.attempt) if self.ports.leases else None
        return ctx, lease

    def _run(self, job_id: UUID, engine: Engine, ctx: Context, lease: Lease | None, consumer: Any) -> str:
        """Run the claimed job ``job_id`` beside the poll loop; its final status."""
        job = self.platform.get_job(job_id)
        policies = self.policies
        if policies.remote_engine is not None:  # the job's agent names a remote provider: run it there
            engine = policies.remote_engine(job) or engine
        limits = dict(policies.limits(job.owner_id)) if policies.limits else {}
        tuning = self.tuning.run
        if policies.max_run_s is not None:
            tuning = replace(tuning, max_run_s=policies.max_run_s(job.type))
        run = JobRun(self.platform, job, engine, ctx, self.ports.blobs, tuning, limits, lease, self._stop)
        self._set_current(str(job_id))
        try:
            status = self._run_beside_poll(run, consumer)
        finally:
            self._set_current(None)
        self.completed.append(str(job_id))
        log.info("job %s (%s) %s on %s", job_id, job.type, status, self.processor_id)
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
