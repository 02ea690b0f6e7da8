"""Events of the Job aggregate.

A job moves pending → running → completed | failed | cancelled. Progress is an integer
0–100; log lines are ``{"at": ISO 8601 UTC, "level": str, "message": str}``.
"""

from __future__ import annotations

from typing import Any

from events.base import CreatedEvent, DomainEvent

#: Every job type of the platform (ARCHITECTURE.md, *Words we use*).
JOB_TYPES: tuple[str, ...] = (
    "stt",
    "tts",
    "voice_cloning",
    "dubbing",
    "ai_stories",
    "video_translation",
    "animated_talking_heads",
)


class JobSubmitted(CreatedEvent):
    """A job was submitted and waits, pending, for a processor.

    ``input_files`` maps a field name (``input_file``, ...) to
    ``{"blob": str, "name": str, "size": int, "content_type": str, "sha256": str}``.
    ``agent_id`` names the agent whose configuration filled omitted parameters;
    ``idempotency_key`` (the client's ``Idempotency-Key``) derives the job id, and
    ``request_hash`` (sha256 of the request) tells a replay from a reuse.
    ``webhook`` (a URL) receives the job's ``webhook_events`` (API.md, *Webhooks*).
    ``demo`` marks a job of ``aiorch seed --demo``: shown, never claimed, reaped or
    re-published. These three were added later with defaults (no per-job webhook, a real
    job), so events stored before decode unchanged (the class attributes stand in for the
    absent fields).
    """

    project_id: str
    owner_id: str
    type: str
    parameters: dict[str, Any]
    input_files: dict[str, dict[str, Any]]
    priority: str
    agent_id: str | None
    idempotency_key: str | None
    request_hash: str | None
    webhook: str | None = None
    webhook_events: list[str] | None = None
    demo: bool = False


class JobStarted(DomainEvent):
    """A processor claimed the job (saved at the version it saw: one claimer wins).

    ``attempt`` is the number of the attempt it runs (1 for the first; see JobRetried)."""

    processor_id: str
    attempt: int


class JobProgressed(DomainEvent):
    """Coalesced progress of a running job (at most about one a second, plus stage changes)."""

    progress: int
    stage: str


class JobLogsAppended(DomainEvent):
    """A batch of log lines of a running job."""

    lines: list[dict[str, Any]]


class JobCompleted(DomainEvent):
    """The job finished; ``result`` is ``{"files": [{blob, name, size, content_type}], "meta": {}}``."""

    result: dict[str, Any]


class JobFailed(DomainEvent):
    """The job failed; ``code`` is invalid_input, engine_error, timed_out or worker_lost."""

    code: str
    message: str


class JobCancelRequested(DomainEvent):
    """Cancellation of a running job was asked for; its processor stops at a checkpoint."""

    reason: str


class JobCancelled(DomainEvent):
    """The job was cancelled (at once if pending, at a checkpoint if running)."""

    reason: str


class JobUpdated(DomainEvent):
    """A pending job was edited: ``changes`` maps ``parameters`` / ``priority`` to new values."""

    changes: dict[str, Any]


class JobRetried(DomainEvent):
    """The job went back to pending as attempt ``attempt`` (the same attempt when a
    processor handed it back on shutdown); ``reason`` says why the previous attempt ended.
    ``type`` and ``priority`` let the relay publish its work without loading the job;
    processors claim it no earlier than ``not_before`` (ISO 8601 UTC, backoff) if set.

    Schema version 2 added ``not_before``; version 1 events are upcast with None.
    """

    class_version = 2

    attempt: int
    reason: str
    type: str
    priority: str
    not_before: str | None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 had no backoff: claim at once."""
        state["not_before"] = None


class JobDeadLettered(DomainEvent):
    """The job failed for good after ``attempts`` attempts; its work went to the
    dead-letter topic, where operators list and re-drive it."""

    code: str
    message: str
    attempts: int
    type: str


class JobArchived(DomainEvent):
    """The job left every list; its history stays replayable."""
