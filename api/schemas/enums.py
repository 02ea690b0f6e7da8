"""The contract's enums: job types, statuses, priorities, roles (they follow :mod:`events`)."""

from __future__ import annotations

from enum import StrEnum

from events import JOB_TYPES, ROLES


class JobType(StrEnum):
    """A job type (also an agent's type); the catalogue is ``events.JOB_TYPES``."""

    stt = "stt"
    tts = "tts"
    voice_cloning = "voice_cloning"
    dubbing = "dubbing"
    ai_stories = "ai_stories"
    video_translation = "video_translation"
    animated_talking_heads = "animated_talking_heads"


class JobStatus(StrEnum):
    """Where a job is: pending → running → completed | failed | cancelled."""

    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class Priority(StrEnum):
    """How soon processors claim a job."""

    low = "low"
    normal = "normal"
    high = "high"


class Role(StrEnum):
    """What a user may do: admins everything, editors their own work, viewers read."""

    admin = "admin"
    editor = "editor"
    viewer = "viewer"


assert tuple(JobType) == JOB_TYPES and tuple(Role) == ROLES, "api.schemas enums must follow events"
