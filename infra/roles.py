"""Each role of the system, built from a :class:`~infra.bootstrap.System`."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI

from api.app import create_app
from api.auth import TokenIssuer
from api.deps import Services
from api.live import LiveHub
from api.readwait import ReadWaiter
from api.signing import UrlSigner
from api.throttle import LoginGuard
from commands.context import SYSTEM, Context
from commands.errors import Conflict
from commands.messages import CreateUser
from infra.bootstrap import System
from infra.db import conninfo
from infra.leadership import Leadership
from infra.leases import LeaseStore, reap
from infra.membership import ProcessorRoster, processors_check
from infra.relay import OutboxRelay
from infra.secrets import secret_key
from projections.follow import StoreWaiter

#: the channel the projector NOTIFYs (its position) when it commits a batch
PROJECTED_CHANNEL = "aiorch_projected"

log = logging.getLogger(__name__)


def api_app(system: System) -> FastAPI:
    """The FastAPI app of ``system``."""
    s = system.settings
    secret = secret_key(s)
    services = Services(
        system.platform,
        system.engine,
        system.blobs,
        TokenIssuer(secret, s.access_token_ttl_s, s.refresh_token_ttl_s),
        read_wait_s=s.read_wait_s,
        max_upload_bytes=s.max_upload_bytes,
        catalog=system.catalog,
        signer=UrlSigner(secret),
        effective_settings=system.effective_settings,
        public_url=s.public_url,
    )
    services.login_guard = LoginGuard(system.engine, s.max_password_checks, s.trusted_proxy_list)
    if s.kafka_bootstrap_servers:
        services.broker_check = broker_check(s.kafka_bootstrap_servers)
    services.processors_check = processors_check(ProcessorRoster(system.engine))
    waiter = system.store_waiter()
    services.reads = ReadWaiter(conninfo(system.database_url), system.projector_position)
    services.hub = LiveHub(
        system.platform.recorder,
        system.platform.mapper.to_domain_event,
        system.engine,
        system.projector_position,
        waiter.wait,
        fold=lambda job_id, version: system.platform.repository.get(job_id, version=version).state(),
        reads=services.reads,  # stopped with the hub
        max_per_user=s.max_live_per_user,
    )
    app = create_app(services, cors_origins=s.cors_origin_list, max_body_bytes=s.max_body_bytes, public_url=s.public_url)
    app.state.metrics.registry.register(services.login_guard.checks.metric)
    return app


def remote_engines(system: System) -> Callable[[Any], Any]:
    """``engine_for(job)``: an engine of the remote provider named by the job's agent (kind
    ``openai_compatible``, enabled; its API key decrypted here), or None to run locally.
    Engines are cached per provider version and job type."""
    from commands.agent import Agent, Provider
    from infra.secrets import fernet

    cipher = fernet(system.settings)
    cache: dict[tuple[str, int, str], Any] = {}

    def engine_for(job: Any) -> Any:
        if not job.agent_id:
            return None
        agent = system.platform._get(Agent, job.agent_id)
        if agent is None or not agent.provider_id:
            return None
        provider = system.platform._get(Provider, agent.provider_id)
        if provider is None or provider.deleted or not provider.enabled or provider.kind != "openai_compatible":
            return None
        key = (str(provider.id), provider.version, job.type)
        if key not in cache:
            from processors.engines.remote import build_remote_engine

            api_key = cipher.decrypt(provider.api_key_encrypted.encode()).decode() if provider.api_key_encrypted else None
            cache[key] = build_remote_engine(
                job.type,
                {
                    "kind": provider.kind,
                    "base_url": provider.base_url,
                    "api_key": api_key,
                    "name": provider.name,
                    "enabled": True,
                    "model": agent.configuration.get("model"),
                    "allowed_networks": system.settings.provider_allowed_network_list,
                },
            )
        return cache[key]

    return engine_for


class JobLease:
    """The lease of one claimed job, taken on creation (see :mod:`infra.leases`)."""

    def __init__(self, store: LeaseStore, job_id: str, processor_id: str, attempt: int) -> None:
        self.store, self.job_id, self.processor_id = store, job_id, processor_id
        store.acquire(job_id, processor_id, attempt)

    def renew(self) -> bool:
        """Extend the lease; False once another processor owns the job."""
        return self.store.renew(self.job_id, self.processor_id)

    def release(self) -> None:
        """Drop the lease."""
        self.store.release(self.job_id, self.processor_id)


def broker_check(bootstrap: str, ttl_s: float = 5.0) -> Callable[[], str]:
    """A cheap readiness probe of the broker: can any bootstrap address be reached over
    TCP (0.5 s timeout)? Answers are cached for ``ttl_s`` seconds."""
    cache: dict[str, Any] = {"at": 0.0, "answer": "unknown"}

    def check() -> str:
        if time.monotonic() - cache["at"] < ttl_s:
            return str(cache["answer"])
        answer = "down: unreachable"
        for address in bootstrap.split(","):
            host, _, port = address.strip().rpartition(":")
            try:
                with socket.create_connection((host or "127.0.0.1", int(port)), timeout=0.5):
                    answer = "ok"
                    break
            except (OSError, ValueError):
                continue
        cache.update(at=time.monotonic(), answer=answer)
        return answer

    return check


def relay(system: System) -> OutboxRelay:
    """The outbox relay of ``system``, active only while it holds the ``relay`` leadership
    (its reaper and reconciler run under the same lock; see :mod:`infra.relay`). Raises
    RuntimeError without a broker address."""
    s = system.settings
    if not s.kafka_bootstrap_servers:
        raise RuntimeError("no broker: set AIORCH_KAFKA_BOOTSTRAP_SERVERS, or start the system with `aiorch up`")
    leases = LeaseStore(system.engine, s.lease_s)
    roster = ProcessorRoster(system.engine)

    def reaper() -> int:
        roster.prune()  # forget processors dead for a day
        return reap(system.platform, leases)

    return OutboxRelay(
        system.engine,
        system.platform.recorder,
        system.platform.mapper.to_domain_event,
        s.kafka_bootstrap_servers,
        prefix=s.topic_prefix,
        waiter=system.store_waiter(),
        poll_interval_s=max(s.poll_interval_s * 10, 0.2),
        requeue_after_s=s.requeue_after_s,
        reconcile_interval_s=s.reconcile_interval_s,
        reaper=reaper,
        leadership=Leadership(conninfo(system.database_url), "relay"),
    )


class StoreWork:
    """``store_work(timeout_s)`` of a processor (see :class:`processors.worker.Processor`):
    waits up to ``timeout_s`` seconds for the projector's NOTIFY (channel
    ``aiorch_projected``, sent when the read models commit a batch), then reads the
    ``JobSubmitted`` / ``JobRetried`` events of ``types`` stored up to the read models'
    position since its last call (one indexed range of the notification log, never before
    the position it first saw) and answers their work messages, as the relay publishes them.
    A timeout answers [] without a query, so an idle processor costs one wake-up per
    ``timeout_s``.

    It follows the read models rather than the store's own NOTIFY so that a job is claimed
    only once the read models show it pending: the answer to its submission (201 with the
    job once the read models include it) still shows it pending, and the claim's checks
    (priorities, the owner's running jobs) read read models that include it.
    """

    def __init__(self, system: System, types: list[str]) -> None:
        from eventsourcing.utils import get_topic

        from commands.job import Job

        self.waiter = StoreWaiter(conninfo(system.database_url), PROJECTED_CHANNEL)
        self.recorder, self.decode = system.platform.recorder, system.platform.mapper.to_domain_event
        self.projected = system.projector_position
        self.topics = [get_topic(Job.JobSubmitted), get_topic(Job.JobRetried)]  # as the store names them
        self.types = set(types)
        self.position: int | None = None

    def __call__(self, timeout_s: float) -> list[dict[str, Any]]:
        from infra.relay import work_message

        if self.position is None:
            self.position = self.projected()
        if not self.waiter.notified(timeout_s):
            return []
        head = self.projected()
        out: list[dict[str, Any]] = []
        while self.position < head:
            batch = self.recorder.select_notifications(
                self.position, 100, stop=head, topics=self.topics, inclusive_of_start=False
            )
            for n in batch:
                event: Any = self.decode(n)
                if event.type in self.types and not getattr(event, "demo", False):
                    out.append(work_message(str(event.originator_id), event.type, event.originator_version, n.id, event.priority))
            if len(batch) < 100:
                break
            self.position = batch[-1].id
        self.position = max(self.position, head)
        return out

    def close(self) -> None:
        """Close the LISTEN connection."""
        self.waiter.close()


def processor_id() -> str:
    """``<host>-<pid>-<random>``: unique per processor process."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def create_user(system: System, username: str, password: str, role: str, email: str | None = None) -> str:
    """Create a user from outside the API (CLI, bootstrap). Returns the user id."""
    user_id, _ = system.platform.create_user(CreateUser(username, password, role, email), Context(SYSTEM, f"cli-{uuid.uuid4()}"))
    return str(user_id)


def bootstrap_admin(system: System) -> None:
    """Create ``AIORCH_BOOTSTRAP_ADMIN=name:password`` if the store has no users yet."""
    spec = system.settings.bootstrap_admin
    if not spec or ":" not in spec:
        return
    name, password = spec.split(":", 1)
    if system.platform.user_exists(name):
        return
    try:
        create_user(system, name, password, "admin")
        log.info("created bootstrap admin %s", name)
    except Conflict:
        pass


def processor(system: System, types: list[str], *, processor_id_: str | None = None) -> Any:
    """A processor of ``system`` serving job ``types`` (engines built, not yet loaded).

    Raises RuntimeError without a broker address; ValueError for a type without an engine.
    """
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import case, func, select

    from infra.kafka import make_consumer, work_topic
    from processors.engines import build_engines
    from processors.run import RunTuning
    from processors.worker import Processor
    from projections import queries
    from projections import tables as t

    s = system.settings
    if not s.kafka_bootstrap_servers:
        raise RuntimeError("no broker: set AIORCH_KAFKA_BOOTSTRAP_SERVERS, or start the system with `aiorch up`")
    bootstrap = s.kafka_bootstrap_servers
    topics = [work_topic(s.topic_prefix, ty) for ty in types]
    engines = build_engines(types, s.resolved_model_dir)

    def stale_work(job_types: list[str], exclude: list[str]) -> dict[str, Any] | None:
        """The most urgent due job of ``job_types`` pending past the requeue threshold."""
        cutoff = datetime.now(UTC) - timedelta(seconds=s.requeue_after_s)
        urgency = case({"high": 0, "normal": 1}, value=t.jobs.c.priority, else_=2)
        with system.engine.connect() as conn:
            row = conn.execute(
                select(t.jobs.c.id, t.jobs.c.type, t.jobs.c.version)
                .where(
                    t.jobs.c.status == "pending",
                    t.jobs.c.type.in_(job_types),
                    t.jobs.c.updated_at < cutoff,
                    t.jobs.c.archived.is_(False),
                    t.jobs.c.demo.is_(False),
                    t.jobs.c.id.not_in(exclude),
                )
                .order_by(urgency, t.jobs.c.created_at)
                .limit(1)
            ).first()
        return {"job_id": row.id, "type": row.type, "version": row.version} if row else None

    proc_id = processor_id_ or processor_id()
    lease_store = LeaseStore(system.engine, s.lease_s)
    rank = {"high": 0, "normal": 1, "low": 2}

    def better_job(job_types: list[str], priority: str, job_id: str) -> dict[str, Any] | None:
        """The oldest due pending job of ``job_types`` with a higher priority, as a work message."""
        higher = [p for p, r in rank.items() if r < rank.get(priority, 1)]
        if not higher:
            return None
        with system.engine.connect() as conn:
            row = conn.execute(
                select(t.jobs.c.id, t.jobs.c.type, t.jobs.c.version)
                .where(
                    t.jobs.c.status == "pending",
                    t.jobs.c.type.in_(job_types),
                    t.jobs.c.priority.in_(higher),
                    t.jobs.c.archived.is_(False),
                    t.jobs.c.demo.is_(False),
                    t.jobs.c.id != job_id,
                )
                .order_by(t.jobs.c.created_at)
                .limit(1)
            ).first()
        return {"job_id": row.id, "type": row.type, "version": row.version} if row else None

    @contextmanager
    def slot_guard(owner_id: str) -> Iterator[bool]:
        """Serialise claims for one owner (a PostgreSQL advisory lock) and say whether
        they run fewer than ``max_concurrent_jobs``; after a claim, hold the lock until
        the read models show it, so the next claimer counts it."""
        key = func.hashtext(f"aiorch-slots:{owner_id}")
        with system.engine.connect() as conn:
            conn.execute(select(func.pg_advisory_lock(key)))
            try:
                limit = int(system.effective_settings(owner_id).get("max_concurrent_jobs") or 0)
                yield limit <= 0 or queries.running_jobs(system.engine, owner_id) < limit
                deadline = time.monotonic() + 5.0
                head = system.platform.head()
                while time.monotonic() < deadline and system.projector_position() < head:
                    time.sleep(0.01)
            finally:
                conn.execute(select(func.pg_advisory_unlock(key)))
                conn.commit()

    return Processor(
        system.platform,
        engines,
        lambda: make_consumer(bootstrap, s.consumer_group, topics),
        system.blobs,
        processor_id=proc_id,
        tuning=RunTuning(s.progress_interval_s, s.log_batch_s, s.cancel_check_s, s.heartbeat_s),
        stale_work=stale_work,
        slot_guard=slot_guard,
        limits=system.effective_settings,
        leases=lambda job_id, attempt: JobLease(lease_store, job_id, proc_id, attempt),
        max_run_s=lambda job_type: float(s.max_run_s.get(job_type, s.max_run_s.get("default", 3600.0))),
        better_job=better_job,
        remote_engine=remote_engines(system),
        stale_check_s=max(s.requeue_after_s, 1.0),
        roster=ProcessorRoster(system.engine),
        store_work=StoreWork(system, types),
    )
