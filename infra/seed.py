"""``aiorch seed --demo``: a realistic sample set — users of each role, projects, jobs of
every type in every status (completed ones with real result files), per-user settings and
agents.

It checks everything first and then stores every project, agent, job, setting and the
``demo.seeded`` marker in one transaction of the event store: it runs in one go or not at
all, and a second run finds the marker and adds nothing. Its jobs are marked ``demo``:
processors never claim them, the reaper and the reconciler leave them alone. A type whose
engine this machine lacks is skipped, saying why. Existing settings are left alone (the
demo users get their own settings; nothing global changes but the marker)."""

from __future__ import annotations

import contextlib
import hashlib
import math
import struct
import tempfile
import uuid
import wave
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from commands.agent import Agent
from commands.context import SYSTEM, Actor, Context, acting_as
from commands.errors import Conflict, DomainError
from commands.handle_config import validate_configuration
from commands.job import Job
from commands.job_parameters import required_files
from commands.project import Project
from commands.setting import Setting
from commands.user import user_id_for
from infra.bootstrap import System
from infra.roles import create_user

DEMO_PASSWORD = "demo-password-change-me"  # noqa: S105 - demo data only, announced as such
MARKER = "demo.seeded"
PROC = Context(Actor("demo-processor", None, "processor"), "seed-demo")
STATUSES = ("pending", "running", "completed", "failed", "cancelled")
USERS = (("demo-admin", "admin"), ("demo-alice", "editor"), ("demo-bob", "editor"), ("demo-victor", "viewer"))
OWNERS = ("demo-alice", "demo-bob")
PROJECTS = ("Podcast season 2", "Product videos")
#: The demo users' own settings (global settings are never touched).
USER_SETTINGS = (
    ("demo-alice", "max_concurrent_jobs", 3),
    ("demo-bob", "default_language", "es"),
    ("demo-bob", "max_file_size_mb", 100),
)
AGENTS: tuple[tuple[str, dict[str, Any]], ...] = (("tts", {"language": "en"}), ("dubbing", {"target_language": "es"}))

_PARAMS: dict[str, dict[str, Any]] = {
    "stt": {"language": "en"},
    "tts": {"text": "Welcome to the demo. Every job keeps its full history.", "language": "en"},
    "voice_cloning": {"text": "This is my cloned voice.", "language": "en"},
    "dubbing": {"target_language": "es", "source_language": "en"},
    "ai_stories": {"prompt": "A lighthouse keeper who befriends a storm", "length": 150, "seed": 7},
    "video_translation": {"target_language": "es", "source_language": "en"},
    "animated_talking_heads": {"text": "Hello from a portrait.", "language": "en"},
}
_STORY = "The keeper lit the lamp as the storm arrived, and the storm, curious, stayed to watch the light."
_TRANSCRIPT = "Welcome to the demo. Every job keeps its full history."


@dataclass
class _Plan:
    """Everything the seed will store, built and checked before anything is written."""

    aggregates: list[Any] = field(default_factory=list)
    blobs: list[tuple[Path, str, str]] = field(default_factory=list)  # (local file, key, content type)
    skipped: dict[str, str] = field(default_factory=dict)  # job type → why


def seed_demo(system: System, echo: Any = print) -> bool:
    """Load the demo set in one go; returns False when it was already there.

    Raises:
        DomainError: something refused the demo data (nothing of it was stored).
    """
    platform = system.platform
    if platform.effective_settings("").get(MARKER):
        echo("the demo data is already there; nothing to do")
        return False
    with tempfile.TemporaryDirectory() as tmp:
        files = _demo_files(Path(tmp))
        users = {name: str(user_id_for(name)) for name, _role in USERS}
        plan = _plan(system, users, files)
        for job_type, why in plan.skipped.items():
            echo(f"skipped the {job_type} demo jobs: {why}")
        for name, role in USERS:  # deterministic ids: a user left by an earlier attempt is reused
            with contextlib.suppress(Conflict):
                create_user(system, name, DEMO_PASSWORD, role, f"{name}@example.com")
            echo(f"user {name} ({role})")
        for path, key, content_type in plan.blobs:
            system.blobs.put_file(path, key, content_type)
        try:
            platform._save(*plan.aggregates)  # one transaction: everything or nothing
        except Conflict:
            if platform.effective_settings("").get(MARKER):  # a concurrent seed won
                echo("the demo data is already there; nothing to do")
                return False
            raise
    jobs = sum(isinstance(a, Job) for a in plan.aggregates)
    echo(f"stored {jobs} demo jobs in {len(OWNERS) * len(PROJECTS)} projects (marked demo: never run)")
    echo(f"demo data loaded. Log in as demo-admin, demo-alice, demo-bob or demo-victor with password {DEMO_PASSWORD!r}.")
    echo("WARNING: demo passwords are for demos only; never load demo data into a production system.")
    return True


def _plan(system: System, users: dict[str, str], files: dict[str, Path]) -> _Plan:
    platform = system.platform
    plan = _Plan()
    runnable: dict[str, dict[str, Any]] = {}
    for job_type, params in _PARAMS.items():
        try:
            runnable[job_type] = platform.validate_job(job_type, params, required_files(job_type, params))
        except DomainError as exc:
            plan.skipped[job_type] = exc.detail
    system_ctx = Context(SYSTEM, f"seed-{uuid.uuid4()}")
    for owner, key, value in USER_SETTINGS:
        if platform._get(Setting, Setting.create_id(key, users[owner])) is None:  # leave what exists alone
            with acting_as(system_ctx):
                plan.aggregates.append(Setting(key=key, value=value, user_id=users[owner]))
    for owner in OWNERS:
        actor = Context(Actor(users[owner], owner, "editor"), f"seed-{owner}")
        with acting_as(actor):
            for job_type, config in AGENTS:
                agent = Agent(
                    name=f"{owner}'s {job_type} agent",
                    description="demo agent",
                    type=job_type,
                    configuration=validate_configuration(job_type, config),
                    provider_id=None,
                    owner_id=users[owner],
                )
                plan.aggregates.append(agent)
        for project_name in PROJECTS:
            with acting_as(actor):
                project = Project(name=project_name, description=f"{owner}'s demo project", owner_id=users[owner])
            plan.aggregates.append(project)
            for job_type, params in runnable.items():
                for status in STATUSES:
                    plan.aggregates.append(_job(plan, actor, project, job_type, params, status, files))
    with acting_as(system_ctx):
        plan.aggregates.append(Setting(key=MARKER, value=True, user_id=None))
    return plan


def _job(
    plan: _Plan, actor: Context, project: Project, job_type: str, params: dict[str, Any], status: str, files: dict[str, Path]
) -> Job:
    inputs: dict[str, dict[str, Any]] = {}
    for field_name in sorted(required_files(job_type, params)):
        source = files["image"] if field_name == "image_file" else files["wav"]
        key = f"uploads/demo/{uuid.uuid4()}/{source.name}"
        inputs[field_name] = _describe(plan, source, key)
    with acting_as(actor):
        job = Job(
            project_id=str(project.id),
            owner_id=actor.actor.id,
            type=job_type,
            parameters=params,
            input_files=inputs,
            priority="normal",
            agent_id=None,
            idempotency_key=None,
            request_hash=None,
            demo=True,
        )
    with acting_as(PROC):
        if status == "cancelled":
            job.cancel("cancelled in the demo")
        elif status != "pending":
            job.start("demo-processor")
            if status == "running":
                job.report_progress(40, "demo: halfway")
            elif status == "completed":
                job.complete(_result(plan, job, files))
            elif status == "failed":
                job.fail("engine_error", "a demo failure")
    return job


def _describe(plan: _Plan, source: Path, key: str) -> dict[str, Any]:
    content_type = {".wav": "audio/wav", ".png": "image/png", ".txt": "text/plain", ".srt": "application/x-subrip"}[source.suffix]
    plan.blobs.append((source, key, content_type))
    data = source.read_bytes()
    return {
        "blob": key,
        "name": source.name,
        "size": len(data),
        "content_type": content_type,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _result(plan: _Plan, job: Job, files: dict[str, Path]) -> dict[str, Any]:
    """Real, small result files and the type's meta shape (API.md, *Results*)."""
    base = f"results/{job.id}/1"
    seconds = 1.0
    segments = [{"start": 0.0, "end": seconds, "source_text": "Hello.", "target_text": "Hola."}]
    by_type: dict[str, tuple[list[str], dict[str, Any]]] = {
        "stt": (
            ["transcript"],
            {
                "transcript": _TRANSCRIPT,
                "language": "en",
                "duration_seconds": seconds,
                "segments": [{"start": 0.0, "end": seconds, "text": _TRANSCRIPT}],
            },
        ),
        "tts": (["wav"], {"duration_seconds": seconds, "voice": "demo", "language": "en"}),
        "voice_cloning": (["wav"], {"f0_median_hz": {"reference": 120.0, "source": 180.0, "output": 121.0}}),
        "dubbing": (["wav"], {"source_language": "en", "target_language": "es", "segments": segments}),
        "ai_stories": (["story"], {"text": _STORY, "words": len(_STORY.split()), "seed": 7, "model": "demo"}),
        "video_translation": (["srt"], {"source_language": "en", "target_language": "es", "segments": segments}),
        "animated_talking_heads": (["image", "wav"], {"fps": 25, "duration_seconds": seconds, "face_box": [8, 8, 48, 48]}),
    }
    names, meta = by_type[job.type]
    described = [_describe(plan, files[n], f"{base}/{files[n].name}") for n in names]
    return {"files": described, "meta": {**meta, "demo": True}}


def _demo_files(tmp: Path) -> dict[str, Path]:
    """Small real files: a one-second 440 Hz WAV, a 64×64 PNG, a transcript, a story, subtitles."""
    wav = tmp / "demo.wav"
    rate = 16_000
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(rate)))
    png = tmp / "portrait.png"
    png.write_bytes(_png(64, 64))
    transcript = tmp / "transcript.txt"
    transcript.write_text(_TRANSCRIPT + "\n")
    story = tmp / "story.txt"
    story.write_text(_STORY + "\n")
    srt = tmp / "subtitles.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nHola.\n")
    return {"wav": wav, "image": png, "transcript": transcript, "story": story, "srt": srt}


def _png(width: int, height: int) -> bytes:
    """A grey gradient PNG written with the standard library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes((x * 4) % 256 for x in range(width)) for _y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
