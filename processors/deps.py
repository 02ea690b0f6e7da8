"""A processor's collaborators, grouped: what it talks to (:class:`ProcessorPorts`), the
policies it follows (:class:`ProcessorPolicies`) and its timings (:class:`ProcessorTuning`).
``infra.roles.processor`` builds them; tests build their own."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from commands.job import Job
from commands.service import Platform
from processors.blobs import BlobAccess
from processors.claims import ClaimPolicy, WorkMessage
from processors.engines.base import Engine
from processors.error_policy import ErrorPolicy, InvalidMessageLog
from processors.job_run import Lease, RunTuning
from processors.membership import Roster


class StoreWork(Protocol):
    """``store_work(timeout_s)`` waits up to ``timeout_s`` seconds for the store to signal
    new work and answers the work messages of the jobs submitted or retried since its last
    call ([] on a timeout); ``close()`` releases its connection (``infra.work.StoreWork``)."""

    def __call__(self, timeout_s: float) -> list[WorkMessage]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ProcessorPorts:
    """What a processor talks to.

    Args:
        platform: the write side (loads and claims jobs, receives reports).
        blobs: blob storage: input files are read and result files stored through it only.
        consumer_factory: builds a subscribed Kafka consumer whose record values are raw
            bytes (recreated after broker errors).
        leases: ``leases(job_id, attempt)`` takes the lease of a job just claimed.
        roster: where its membership row is kept fresh (see :mod:`processors.membership`).
        store_work: work heard of from the store, claimed while idle.
        invalid_messages: where dead-lettered records are kept (None: logged and counted only).
    """

    platform: Platform
    blobs: BlobAccess
    consumer_factory: Callable[[], Any]
    leases: Callable[[str, int], Lease] | None = None
    roster: Roster | None = None
    store_work: StoreWork | None = None
    invalid_messages: InvalidMessageLog | None = None


@dataclass(frozen=True)
class ProcessorPolicies:
    """The policies a processor follows.

    Args:
        claims: priorities, backoff and per-owner slots, and where stale work comes from
            (None: claim whatever work message arrives, no stale sweep).
        errors: what becomes of a record whose handling raised.
        limits: ``limits(owner_id)`` → the owner's effective settings (the run's limits).
        max_run_s: ``max_run_s(job_type)`` → seconds a run may take (None: the tuning's).
        remote_engine: ``remote_engine(job)`` → the engine of the remote provider the job's
            agent names, or None to run locally.
    """

    claims: ClaimPolicy | None = None
    errors: ErrorPolicy = field(default_factory=ErrorPolicy)
    limits: Callable[[str], Mapping[str, Any]] | None = None
    max_run_s: Callable[[str], float] | None = None
    remote_engine: Callable[[Job], Engine | None] | None = None


@dataclass(frozen=True)
class ProcessorTuning:
    """A processor's timings (seconds): a run's (``run``), how often stale pending work is
    looked for in the read models, and how long one wait for the store's news lasts."""

    run: RunTuning = field(default_factory=RunTuning)
    stale_check_s: float = 10.0
    store_wait_s: float = 5.0
