"""Processor membership: each processor keeps one row fresh — who it is, what it serves,
which job it runs — so that readiness and ``aiorch processors list`` can tell live
processors from dead ones. A heartbeat is a cheap row update, not an event.

The row's SQL lives in ``infra`` behind :class:`Roster`; this module only says when to
write: at start, every ``interval_s`` seconds, whenever the current job changes, and a
delete on a clean stop. A row whose last heartbeat is older than three intervals counts as
dead (a killed processor simply stops beating).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """One processor: its id (the claim's owner), host, pid, job types, heartbeat interval
    (seconds) and start time."""

    id: str
    types: tuple[str, ...]
    interval_s: float
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class Roster(Protocol):
    """Where membership rows live (``infra.membership.ProcessorRoster``)."""

    def beat(self, member: Member, current_job: str | None) -> None:
        """Insert or refresh ``member``'s row, stamped with the database's clock."""

    def leave(self, member_id: str) -> None:
        """Delete ``member_id``'s row (a clean stop)."""


class Heartbeat:
    """A daemon thread that keeps ``member``'s row fresh.

    Args:
        roster: where the row lives.
        member: the processor.
        current_job: answers the id of the job it runs now, or None.
    """

    def __init__(self, roster: Roster, member: Member, current_job: Callable[[], str | None]) -> None:
        self.roster, self.member, self.current_job = roster, member, current_job
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Write the row now, then beat in the background."""
        self._beat()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.member.id}", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Beat at once (the current job changed)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop beating and delete the row (a clean stop)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        try:
            self.roster.leave(self.member.id)
        except Exception:
            log.warning("processor %s: could not delete its membership row", self.member.id, exc_info=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.member.interval_s)
            self._wake.clear()
            if not self._stop.is_set():
                self._beat()

    def _beat(self) -> None:
        try:
            self.roster.beat(self.member, self.current_job())
        except Exception as exc:  # noqa: BLE001 - a missed beat must not stop the processor
            log.warning("processor %s: heartbeat failed (%s)", self.member.id, exc)
