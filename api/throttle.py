"""Login safety (API.md *Auth and users*): a per-process cap on concurrent password checks,
the client's address, and the login throttle.

The throttle keeps, per key, the times of the recent failures in one row of
``login_attempts``; every attempt reads and changes its rows under row locks
(``SELECT … FOR UPDATE``) in one transaction, so concurrent attempts cannot pass a limit. An
attempt is counted as a failure *before* its password is checked; it is uncounted when its
check never runs, and a success clears its rows.

- key ``pair:<address> <username>``: more than 10 failures in 5 minutes → 429, Retry-After
  until the oldest leaves the window;
- key ``user:<username>`` (all addresses): from 10 recent failures on, one attempt per
  1, 2, 4 … at most 30 s (Retry-After ≤ 30 s), so an attacker slows a user's logins but
  never locks them out.
"""

from __future__ import annotations

import ipaddress
import math
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter
from sqlalchemy import Column, DateTime, Double, Engine, MetaData, String, Table, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from starlette.requests import Request

metadata = MetaData()

login_attempts = Table(
    "login_attempts",
    metadata,
    Column("key", String(400), primary_key=True),
    # epoch seconds (the database's clock) of the counted failures, oldest first
    Column("failures", ARRAY(Double), nullable=False, server_default="{}"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now(), index=True),
)

PAIR_LIMIT = 10  # failures per (username, address) in WINDOW_S
WINDOW_S = 300.0
USER_FREE = 10  # failures per username (all addresses) before its logins slow down
USER_MAX_DELAY_S = 30.0
USER_KEEP = 32  # failure times kept per username: enough to reach the longest delay


class Throttled(Exception):
    """Refused before any password check: answer 429 with ``Retry-After: retry_after`` (s)."""

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.detail, self.retry_after = detail, max(1, math.ceil(retry_after))


def user_delay(failures: int) -> float:
    """Seconds a username's next attempt waits after its last one, given ``failures``
    recent failures from all addresses: 0 below 10, then 1, 2, 4 … capped at 30."""
    return 0.0 if failures < USER_FREE else min(USER_MAX_DELAY_S, 2.0 ** (failures - USER_FREE))


@dataclass(frozen=True)
class Attempt:
    """A counted login attempt: the keys it was counted under and its time (epoch s)."""

    keys: tuple[str, str]
    at: float


class LoginThrottle:
    """The throttle's counts in ``login_attempts`` of ``engine`` (shared by every API process)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def reserve(self, username: str, address: str) -> Attempt:
        """Count one attempt for lower-cased ``username`` from ``address`` as a failure.

        Raises:
            Throttled: the pair has had more than its failures, or the username is slowed down.
        """
        pair, user = f"pair:{address} {username}", f"user:{username}"
        c = login_attempts.c
        with self.engine.begin() as conn:
            conn.execute(insert(login_attempts).values([{"key": pair}, {"key": user}]).on_conflict_do_nothing())
            rows = dict(
                conn.execute(select(c.key, c.failures).where(c.key.in_((pair, user))).order_by(c.key).with_for_update()).all()
            )
            now = float(conn.execute(select(func.extract("epoch", func.clock_timestamp()))).scalar_one())
            recent = {key: sorted(t for t in times if t > now - WINDOW_S) for key, times in rows.items()}
            if len(recent[pair]) >= PAIR_LIMIT:
                wait = recent[pair][-PAIR_LIMIT] + WINDOW_S - now
                raise Throttled("too many failed logins for this username from this address; try later", wait)
            failures = recent[user]
            if failures and now < failures[-1] + user_delay(len(failures)):
                wait = failures[-1] + user_delay(len(failures)) - now
                raise Throttled("failed logins for this username slow its logins; retry shortly", wait)
            conn.execute(update(login_attempts).where(c.key == pair).values(failures=[*recent[pair], now], updated_at=func.now()))
            conn.execute(
                update(login_attempts).where(c.key == user).values(failures=[*failures, now][-USER_KEEP:], updated_at=func.now())
            )
        if random.random() < 1 / 64:  # not for security: how often old rows are swept
            self.sweep()
        return Attempt((pair, user), now)

    def release(self, attempt: Attempt) -> None:
        """Uncount an attempt whose password was never checked."""
        c = login_attempts.c
        with self.engine.begin() as conn:
            rows = conn.execute(select(c.key, c.failures).where(c.key.in_(attempt.keys)).order_by(c.key).with_for_update()).all()
            for key, times in rows:
                if attempt.at in times:
                    kept = list(times)
                    kept.remove(attempt.at)
                    conn.execute(update(login_attempts).where(c.key == key).values(failures=kept))

    def succeeded(self, attempt: Attempt) -> None:
        """A successful login clears the failures of its username and of its pair."""
        with self.engine.begin() as conn:
            conn.execute(delete(login_attempts).where(login_attempts.c.key.in_(attempt.keys)))

    def sweep(self) -> None:
        """Drop rows without a failure in the window (random usernames leave no state behind)."""
        with self.engine.begin() as conn:
            conn.execute(
                delete(login_attempts).where(
                    login_attempts.c.updated_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, WINDOW_S)
                )
            )


class PasswordChecks:
    """At most ``limit`` concurrent Argon2 checks in this process (each takes 64 MiB); the
    rest are refused at once, never queued. ``metric`` counts the checks run."""

    def __init__(self, limit: int) -> None:
        self._slots = threading.BoundedSemaphore(max(1, limit))
        self.metric = Counter("aiorch_password_checks", "Password (Argon2) checks run by this API process", registry=None)

    def acquire(self) -> bool:
        """Take a slot if one is free (never waits); False when all are busy."""
        if not self._slots.acquire(blocking=False):
            return False
        self.metric.inc()
        return True

    def release(self) -> None:
        """Give back a slot taken by :meth:`acquire`."""
        self._slots.release()


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client's address: the socket's peer; when the peer is a trusted proxy, the
    right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy (an unreadable
    entry stops the walk at the last trusted hop). ``unknown`` without a peer."""
    ip = _ip(peer or "")
    if ip is None:
        return peer or "unknown"
    hops = [h for h in (forwarded_for or "").split(",") if h.strip()]
    while any(ip in net for net in trusted) and hops:
        nxt = _ip(hops.pop())
        if nxt is None:
            break
        ip = nxt
    return str(ip)


class LoginGuard:
    """What ``POST /api/token/`` needs: the throttle, the password-check slots and the
    proxies (addresses or CIDRs) whose ``X-Forwarded-For`` is believed.

    Raises:
        ValueError: a trusted proxy is neither an address nor a network.
    """

    def __init__(self, engine: Engine, max_checks: int = 4, trusted_proxies: Sequence[str] = ()) -> None:
        self.throttle = LoginThrottle(engine)
        self.checks = PasswordChecks(max_checks)
        self.trusted: list[Network] = [ipaddress.ip_network(p.strip(), strict=False) for p in trusted_proxies]

    def address(self, request: Request) -> str:
        """The address ``request`` came from (see :func:`client_address`)."""
        peer = request.client.host if request.client else None
        return client_address(peer, request.headers.get("x-forwarded-for"), self.trusted)
