"""Each role of the system, built from a :class:`~infra.bootstrap.System`."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
from infra.invalid_messages import InvalidMessageTable
from infra.leadership import Leadership
from infra.leases import JobLease, LeaseStore
from infra.membership import ProcessorRoster, processors_check
from infra.relay import OutboxRelay
from infra.secrets import secret_key
from processors.reaper import Reaper
from projections.history import JobRows, StoreHistory

if TYPE_CHECKING:
    from processors.processor import Processor

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
    history = StoreHistory.of_store(system.engine, system.platform.recorder, system.platform.mapper)
    services.reads = ReadWaiter(conninfo(system.database_url), system.projector_position)
    services.hub = LiveHub(
        system.platform.recorder,
        system.platform.mapper.to_domain_event,
        system.engine,
        system.projector_position,
        waiter.wait,
        job_rows=JobRows(history),  # the job as of each pushed event, moved forward in memory
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
        agent = system.platform.find(Agent, job.agent_id)
        if agent is None or not agent.provider_id:
            return None
        provider = system.platform.find(Provider, agent.provider_id)
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
    reap = Reaper(system.platform, LeaseStore(system.engine, s.lease_s))
    roster = ProcessorRoster(system.engine)

    def reaper() -> int:
        roster.prune()  # forget processors dead for a day
        return reap()

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


def processor(system: System, types: list[str], *, processor_id_: str | None = None) -> Processor:
    """A processor of ``system`` serving job ``types`` (engines built, not yet loaded).

    Raises RuntimeError without a broker address; ValueError for a type without an engine.
    """
    from infra.kafka import make_consumer, work_topic
    from infra.work import AdvisoryOwnerLocks, ReadModelWork, StoreWork
    from processors.claims import ClaimPolicy
    from processors.deps import ProcessorPolicies, ProcessorPorts, ProcessorTuning
    from processors.engines import build_engines
    from processors.job_run import RunTuning
    from processors.processor import Processor

    s = system.settings
    if not s.kafka_bootstrap_servers:
        raise RuntimeError("no broker: set AIORCH_KAFKA_BOOTSTRAP_SERVERS, or start the system with `aiorch up`")
    bootstrap, topics = s.kafka_bootstrap_servers, [work_topic(s.topic_prefix, ty) for ty in types]
    engines = build_engines(types, s.resolved_model_dir)
    proc_id = processor_id_ or processor_id()
    lease_store = LeaseStore(system.engine, s.lease_s)
    db = conninfo(system.database_url)
    ports = ProcessorPorts(
        system.platform,
        system.blobs,
        # raw values: the processor decodes them, so a malformed record is dead-lettered once
        lambda: make_consumer(bootstrap, s.consumer_group, topics, value_deserializer=None),
        leases=lambda job_id, attempt: JobLease(lease_store, job_id, proc_id, attempt),
        roster=ProcessorRoster(system.engine),
        store_work=StoreWork(system.platform, system.projector_position, db, types),
        invalid_messages=InvalidMessageTable(system.engine),
    )
    claims = ClaimPolicy(
        ReadModelWork(system.engine, system.projector_position, db),
        limits=system.effective_settings,
        locks=AdvisoryOwnerLocks(system.engine),
        requeue_after_s=s.requeue_after_s,
    )
    policies = ProcessorPolicies(
        claims=claims,
        limits=system.effective_settings,
        max_run_s=lambda job_type: float(s.max_run_s.get(job_type, s.max_run_s.get("default", 3600.0))),
        remote_engine=remote_engines(system),
    )
    run = RunTuning(s.progress_interval_s, s.log_batch_s, s.cancel_check_s, s.heartbeat_s)
    tuning = ProcessorTuning(run, stale_check_s=max(s.requeue_after_s, 1.0))
    return Processor(engines, ports, processor_id=proc_id, policies=policies, tuning=tuning)
