"""Shapes shared by many answers: pages, 202 answers, users, counts, health."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, Field

T = TypeVar("T")


class UserRef(BaseModel):
    """A user, briefly."""

    id: UUID
    username: str | None


class Accepted(BaseModel):
    """A create that the read models have not shown yet (202): poll ``Location``, or read
    with ``?min_position=position``."""

    id: UUID
    position: int


class Lagging(BaseModel):
    """A write the read models have not shown yet (202): read with ``?min_position=position``."""

    position: int


class Page(BaseModel, Generic[T]):
    """A DRF-style page: ``next``/``previous`` are absolute links or null."""

    count: int = Field(ge=0)
    next: str | None
    previous: str | None
    results: list[T]


class Count(BaseModel):
    """How many were affected."""

    count: int


class Empty(BaseModel):
    """An empty object ``{}``."""


class Live(BaseModel):
    """The process answers."""

    status: Literal["ok"]


class Ready(BaseModel):
    """Readiness: ``checks`` per part (``"ok"`` or why not; lags in events); 503 only when
    a part this process needs (the database) is down."""

    status: Literal["ok", "degraded", "down"]
    checks: dict[str, Any]


class Redelivered(Count):
    """Failed deliveries queued again (``count``), and the position of the last write."""

    position: int
