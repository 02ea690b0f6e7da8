"""Who acts, and why: the context every stored event is stamped with.

The application service enters :func:`acting_as` around each command; aggregates read it
when they record an event (see :class:`commands.aggregate.PlatformAggregate`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Actor:
    """A user (``role`` admin, editor or viewer) or a processor (``role`` ``"processor"``)."""

    id: str
    username: str | None
    role: str

    @property
    def is_admin(self) -> bool:
        """Admins and processors act on every job."""
        return self.role in ("admin", "processor")

    def as_dict(self) -> dict[str, Any]:
        """``{"id", "username", "role"}`` as stored in events."""
        return {"id": self.id, "username": self.username, "role": self.role}


#: The actor of commands issued by the system itself (bootstrap, CLI).
SYSTEM = Actor(id="system", username="system", role="admin")


@dataclass(frozen=True)
class Context:
    """The actor and correlation id (request id or job run) of one command."""

    actor: Actor
    correlation_id: str


_current: contextvars.ContextVar[Context] = contextvars.ContextVar("aiorch_command_context")


@contextmanager
def acting_as(ctx: Context) -> Iterator[Context]:
    """Stamp events recorded inside the block with ``ctx``."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def current_context() -> Context:
    """The context of the command being executed.

    Raises:
        RuntimeError: an event was recorded outside :func:`acting_as`.
    """
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("an event was recorded outside acting_as(); every event needs an actor") from None
