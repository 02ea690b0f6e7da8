"""Work messages as Kafka delivers them: raw record values checked before anything acts on
them, so that a malformed record is refused once (and dead-lettered by the consumer's
error policy, :mod:`processors.error_policy`) instead of failing on every delivery."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any
from uuid import UUID

from processors.claims import WorkMessage


class InvalidWorkMessage(ValueError):
    """A record that is not a work message this processor can act on (never will be)."""


def parse_work_message(value: bytes | str | dict[str, Any] | None, served: Collection[str]) -> WorkMessage:
    """The work message in a record's ``value`` (UTF-8 JSON bytes, or already decoded):
    an object with a ``job_id`` (a UUID) and a ``type`` among ``served``; ``version``
    and ``position``, when present, integers; ``priority``, when present, a string.

    Raises:
        InvalidWorkMessage: the value is not such an object (saying why).
    """
    if isinstance(value, bytes | str):
        try:
            value = json.loads(value.decode("utf-8") if isinstance(value, bytes) else value)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are
            raise InvalidWorkMessage(f"not UTF-8 JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidWorkMessage(f"not a JSON object but {type(value).__name__}")
    try:
        UUID(str(value.get("job_id")))
    except ValueError:
        raise InvalidWorkMessage(f"job_id {str(value.get('job_id'))[:80]!r} is not a UUID") from None
    if value.get("type") not in served:
        raise InvalidWorkMessage(f"type {str(value.get('type'))[:80]!r} is not served here")
    for key in ("version", "position"):
        if key in value and (not isinstance(value[key], int) or isinstance(value[key], bool)):
            raise InvalidWorkMessage(f"{key} is not an integer")
    if "priority" in value and not isinstance(value["priority"], str):
        raise InvalidWorkMessage("priority is not a string")
    return value
