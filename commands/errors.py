"""The domain exception hierarchy; the API maps each class to one problem+json status."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every refusal a command can answer with."""

    status: int = 400
    title: str = "Bad request"
    slug: str = "bad-request"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class Unauthenticated(DomainError):
    """Missing, expired, tampered or revoked credentials."""

    status, title, slug = 401, "Not authenticated", "unauthenticated"


class Forbidden(DomainError):
    """The actor may see the resource but not act on it."""

    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(DomainError):
    """No such resource, or one the actor may not see."""

    status, title, slug = 404, "Not found", "not-found"


class Conflict(DomainError):
    """The command does not fit the aggregate's current state or version."""

    status, title, slug = 409, "Conflict", "conflict"


class ClaimLost(Conflict):
    """Another processor claimed the job first (or it is no longer pending)."""


class LateReport(Conflict):
    """A report (result, failure, hand-back) from a processor whose claim is no longer current."""


class InvalidCommand(DomainError):
    """The command's input is invalid; ``errors`` lists ``{loc, msg}``."""

    status, title, slug = 422, "Validation error", "validation-error"


class UnsupportedMediaType(DomainError):
    """An uploaded file's sniffed type does not fit its field."""

    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class PayloadTooLarge(DomainError):
    """An upload is over the size limit."""

    status, title, slug = 413, "Payload too large", "payload-too-large"
