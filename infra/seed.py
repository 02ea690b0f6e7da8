"""``aiorch seed --demo``: a realistic sample set — users of each role, projects, jobs of
every type in every status (completed ones with a result), global and per-user settings
and agents. Idempotent: a second run finds the marker setting and does nothing."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

from commands.context import SYSTEM, Actor, Context
from commands.errors import Conflict
from commands.messages import (
    CancelJob,
    CompleteJob,
    CreateAgent,
    CreateProject,
    FailJob,
    SetSetting,
    StartJob,
    SubmitJob,
)
from commands.user import user_id_for
from infra.bootstrap import System
from infra.roles import create_user

DEMO_PASSWORD = "demo-password-change-me"  # noqa: S105 - demo data only, announced as such
MARKER = "demo.seeded"
PROC = Context(Actor("demo-processor", None, "processor"), "seed-demo")

_PARAMS: dict[str, dict[str, Any]] = {
    "stt": {"language": "en"},
    "tts": {"text": "Welcome to the demo. Every job keeps its full history."},
    "voice_cloning": {"text": "This is my cloned voice."},
    "dubbing": {"target_language": "es", "source_language": "en"},
    "ai_stories": {"prompt": "A lighthouse keeper who befriends a storm", "length": 150, "seed": 7},
    "video_translation": {"target_language": "es"},
    "animated_talking_heads": {"text": "Hello from a portrait."},
}
_FILES: dict[str, list[str]] = {
    "stt": ["input_file"],
    "voice_cloning": ["reference_file"],
    "dubbing": ["input_file"],
    "video_translation": ["input_file"],
    "animated_talking_heads": ["image_file"],
}


def seed_demo(system: System, echo: Any = print) -> bool:
    """Load the demo set; returns False when it was already there."""
    platform = system.platform
    ctx = Context(SYSTEM, f"seed-{uuid.uuid4()}")
    if platform.effective_settings("").get(MARKER):
        echo("the demo data is already there; nothing to do")
        return False
    users: dict[str, str] = {}
    for name, role in (("demo-admin", "admin"), ("demo-alice", "editor"), ("demo-bob", "editor"), ("demo-victor", "viewer")):
        try:
            users[name] = create_user(system, name, DEMO_PASSWORD, role, f"{name}@example.com")
        except Conflict:
            users[name] = str(user_id_for(name))
        echo(f"user {name} ({role})")
    platform.set_setting(SetSetting("max_concurrent_jobs", 3), ctx)
    platform.set_setting(SetSetting("max_file_size_mb", 100), ctx)
    platform.set_setting(SetSetting("default_language", "es", users["demo-bob"]), ctx)
    saved_check = platform.missing_engine
    platform.missing_engine = lambda _type: []  # demo jobs of every type, even without their engine here
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for owner in ("demo-alice", "demo-bob"):
                _seed_owner(system, owner, users[owner], Path(tmp), echo)
    finally:
        platform.missing_engine = saved_check
    platform.set_setting(SetSetting(MARKER, True), ctx)
    echo(f"demo data loaded. Log in as demo-admin, demo-alice, demo-bob or demo-victor with password {DEMO_PASSWORD!r}.")
    echo("WARNING: demo passwords are for demos only; never load demo data into a production system.")
    return True


def _seed_owner(system: System, owner: str, owner_id: str, tmp: Path, echo: Any) -> None:
    platform = system.platform
    actor = Context(Actor(owner_id, owner, "editor"), f"seed-{owner}")
    for job_type, config in (("tts", {"language": "en"}), ("dubbing", {"target_language": "es"})):
        platform.create_agent(CreateAgent(f"{owner}'s {job_type} agent", job_type, config, "demo agent"), actor)
    for project_name in ("Podcast season 2", "Product videos"):
        project_id, _ = platform.create_project(CreateProject(project_name, f"{owner}'s demo project"), actor)
        for job_type, params in _PARAMS.items():
            for status in ("pending", "running", "completed", "failed", "cancelled"):
                files = {field: _demo_blob(system, tmp, field) for field in _FILES.get(job_type, [])}
                job_id, _ = platform.submit_job(SubmitJob(project_id, job_type, params, files), actor)
                _advance(system, job_id, status, tmp)
        echo(f"project {project_name!r} of {owner}: 35 jobs")


def _demo_blob(system: System, tmp: Path, field: str) -> dict[str, Any]:
    path = tmp / f"{field}.txt"
    path.write_text("demo input: replace with a real recording, video or portrait\n")
    return system.blobs.put_file(path, f"uploads/demo/{uuid.uuid4()}/{field}.txt", "text/plain").describe()


def _advance(system: System, job_id: uuid.UUID, status: str, tmp: Path) -> None:
    platform = system.platform
    if status == "pending":
        return
    if status == "cancelled":
        platform.cancel_job(CancelJob(job_id, "cancelled in the demo"), PROC)
        return
    platform.start_job(StartJob(job_id, platform.get_job(job_id).version, "demo-processor"), PROC)
    if status == "completed":
        path = tmp / "result.txt"
        path.write_text("demo result\n")
        blob = system.blobs.put_file(path, f"results/{job_id}/1/result.txt", "text/plain").describe()
        platform.complete_job(CompleteJob(job_id, {"files": [blob], "meta": {"demo": True}}), PROC)
    elif status == "failed":
        platform.fail_job(FailJob(job_id, "engine_error", "a demo failure"), PROC)
