"""The domain exception hierarchy. It knows nothing of HTTP: :mod:`api.errors` maps each
class to a problem+json status and locates each :class:`FieldError` in the request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: One part of a field's path: an object key or a list index.
PathPart = str | int


@dataclass(frozen=True)
class FieldError:
    """One invalid input field: its path in the command's input (``("parameters", "text")``;
    ``()`` is the whole input) and why it is refused."""

    path: tuple[PathPart, ...]
    msg: str


class DomainError(Exception):
    """Base of every refusal a command can answer with; ``detail`` is for people."""

    def __init__(self, detail: str, *, fields: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fields: tuple[FieldError, ...] = tuple(fields)


class Unauthenticated(DomainError):
    """Missing, expired, tampered or revoked credentials."""


class Forbidden(DomainError):
    """The actor may see the resource but not act on it."""


class NotFound(DomainError):
    """No such resource, or one the actor may not see."""


class Conflict(DomainError):
    """The command does not fit the aggregate's current state or version."""


class ConcurrentWrite(Conflict):
    """Another command stored events of the aggregate first (the store's version check);
    handlers wrapped in :func:`commands.base.retry_on_conflict` load again and retry."""


class ClaimLost(Conflict):
    """Another processor claimed the job first (or it is no longer pending)."""


class LateReport(Conflict):
    """A report (result, failure, hand-back) from a processor whose claim is no longer current."""


class InvalidCommand(DomainError):
    """The command's input is invalid; ``fields`` names each refused field."""


class UnsupportedMediaType(DomainError):
    """An uploaded file's sniffed type does not fit its field."""


class PayloadTooLarge(DomainError):
    """An upload is over the size limit."""


def invalid(path: PathPart | Sequence[PathPart], msg: str, detail: str | None = None) -> InvalidCommand:
    """An InvalidCommand about the field at ``path`` (a name or a path); ``detail``
    defaults to ``msg``."""
    parts = (path,) if isinstance(path, str | int) else tuple(path)
    return InvalidCommand(msg if detail is None else detail, fields=[FieldError(parts, msg)])
