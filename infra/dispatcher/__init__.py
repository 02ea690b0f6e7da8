"""The webhook dispatcher (API.md, *Webhooks*): one active instance under
``Leadership("dispatcher")``, standbys take over.

Two halves, both driven by PostgreSQL (never by Kafka, so a broker outage does not matter):

- the **recorder** follows the store from its tracked position (``projection_tracking``,
  name ``webhook_dispatcher``) and, in the same transaction as that position, keeps the
  endpoints it serves (``webhook_targets``) and turns each matching event into one delivery
  row per target with its payload captured then: the job as of that event (folded from
  the job's events), and its position. An event it cannot handle is parked
  (:mod:`projections.failures`) and the recorder moves on.
- the **senders** pick due deliveries (``SELECT … FOR UPDATE SKIP LOCKED``, then lease
  them by moving ``next_attempt_at`` past the timeout), resolve and check the URL's host
  with the outbound-address guard (DNS rebinding: the request goes to the checked
  address), and POST the body signed per Standard Webhooks for this attempt, no redirects,
  reading at most 4 KiB of the answer. One writer thread records the attempts in batches
  (one transaction for whatever the senders finished meanwhile; a delivery keeps its lease
  until its attempt is recorded, so one answered 2xx just before a ``kill -9`` is sent
  again once the lease ends: at least once, the ``webhook-id`` unchanged). Failures are
  retried on the schedule with jitter and ``Retry-After``; an endpoint whose deliveries all
  failed for ``webhook_disable_after_s`` is disabled (an event, so its owner sees
  ``disabled_reason``).

Modules: :mod:`~infra.dispatcher.recorder` (events → delivery rows),
:mod:`~infra.dispatcher.claims` (leasing due deliveries, recording attempts),
:mod:`~infra.dispatcher.sender` (one signed attempt), :mod:`~infra.dispatcher.dispatch`
(the role that runs them).
"""

from __future__ import annotations

from typing import Any

from commands.outbound import Resolver
from infra.dispatcher.dispatch import Dispatcher
from infra.dispatcher.recorder import DeliveryRecorder
from infra.dispatcher.sender import AttemptResult, Sender, retry_after_seconds, signature_header


def build_dispatcher(system: Any, *, resolver: Resolver | None = None) -> Dispatcher:
    """The dispatcher of ``system`` (a :class:`~infra.bootstrap.System`)."""
    from infra.db import conninfo
    from infra.secrets import fernet

    s = system.settings
    cipher = fernet(s)
    sender = Sender(
        allow_private=s.webhook_allow_private, timeout_s=s.webhook_timeout_s, resolver=resolver, pool=s.webhook_concurrency
    )
    return Dispatcher(
        system.engine,
        system.platform,
        lambda token: cipher.decrypt(token.encode()).decode(),
        conninfo(system.database_url),
        sender=sender,
        schedule_s=s.webhook_schedule_s,
        disable_after_s=s.webhook_disable_after_s,
        waiter=system.store_waiter(),
        poll_interval_s=max(s.poll_interval_s * 10, 0.1),
        concurrency=s.webhook_concurrency,
        public_url=s.public_url,
    )


__all__ = [
    "AttemptResult",
    "DeliveryRecorder",
    "Dispatcher",
    "Sender",
    "build_dispatcher",
    "retry_after_seconds",
    "signature_header",
]
