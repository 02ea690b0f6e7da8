"""The read-side job queries (projections/queries) against a real PostgreSQL: the read-model
tables created bare on a fresh database and filled by hand, so each query's filters and
order are seen row by row (no projector, no broker)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from events.enums import JobStatus
from infra.db import make_engine
from projections import queries
from projections import tables as t

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ADMIN = {"id": "admin-1", "role": "admin"}
EDITOR = {"id": "ed-1", "role": "editor"}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url, pool_size=2)
    t.jobs.metadata.create_all(eng)
    yield eng
    eng.dispose()


def add_job(engine: Engine, minute: int, **values: Any) -> str:
    """A job row created at ``T0 + minute`` (updated then too, unless ``updated_at``)."""
    job_id = str(uuid.uuid4())
    row: dict[str, Any] = {
        "id": job_id,
        "project_id": "p-1",
        "type": "tts",
        "status": JobStatus.PENDING,
        "progress": 0,
        "stage": "",
        "priority": "normal",
        "attempt": 1,
        "parameters": {},
        "input_files": {},
        "created_by_id": EDITOR["id"],
        "created_at": T0 + timedelta(minutes=minute),
        "updated_at": T0 + timedelta(minutes=minute),
        "has_result": False,
        "cancel_requested": False,
        "archived": False,
        "demo": False,
        "version": 1,
        "position": minute,
        **values,
    }
    with engine.begin() as conn:
        conn.execute(insert(t.jobs).values(row))
    return job_id


def oldest(engine: Engine, **kwargs: Any) -> str | None:
    found = queries.oldest_pending_job(engine, ["tts"], **kwargs)
    return found["job_id"] if found else None


def test_oldest_pending_job_is_the_oldest_claimable_one(engine: Engine) -> None:
    assert oldest(engine) is None
    first = add_job(engine, 5)
    add_job(engine, 1, status=JobStatus.RUNNING)
    add_job(engine, 2, archived=True)
    add_job(engine, 3, demo=True)
    add_job(engine, 4, type="stt")
    assert queries.oldest_pending_job(engine, ["tts"]) == {"job_id": first, "type": "tts", "version": 1}
    second = add_job(engine, 6)
    assert oldest(engine, exclude=[first]) == second
    assert oldest(engine, exclude=[first, second]) is None


def test_oldest_pending_job_by_priorities_and_age(engine: Engine) -> None:
    low = add_job(engine, 1, priority="low")
    high = add_job(engine, 2, priority="high", updated_at=T0 + timedelta(minutes=30))
    assert oldest(engine, priorities=["high", "normal"]) == high
    assert oldest(engine, priorities=["normal"]) is None
    assert oldest(engine, priorities=None) == low
    assert oldest(engine, unchanged_since=T0 + timedelta(minutes=10)) == low
    assert oldest(engine, priorities=["high"], unchanged_since=T0 + timedelta(minutes=10)) is None
    assert oldest(engine, priorities=["high"], unchanged_since=T0 + timedelta(minutes=31)) == high


def test_job_by_id_is_what_the_viewer_may_see(engine: Engine) -> None:
    own = add_job(engine, 1)
    other = add_job(engine, 2, created_by_id="ed-2")
    archived = add_job(engine, 3, archived=True)
    row = queries.job_by_id(engine, own, EDITOR)
    assert row is not None and row["id"] == own and row["status"] == "pending"
    assert queries.job_by_id(engine, other, EDITOR) is None
    assert queries.job_by_id(engine, other, ADMIN) is not None
    assert queries.job_by_id(engine, archived, ADMIN) is None
    assert queries.job_by_id(engine, str(uuid.uuid4()), ADMIN) is None


def test_running_jobs_counts_the_owners_running_ones(engine: Engine) -> None:
    add_job(engine, 1, status=JobStatus.RUNNING)
    add_job(engine, 2, status=JobStatus.RUNNING)
    add_job(engine, 3)
    add_job(engine, 4, status=JobStatus.RUNNING, created_by_id="ed-2")
    assert queries.running_jobs(engine, EDITOR["id"]) == 2
    assert queries.running_jobs(engine, "nobody") == 0


def test_a_result_and_its_first_log_lines(engine: Engine) -> None:
    job_id = add_job(engine, 1, status=JobStatus.COMPLETED)
    assert queries.result_of_job(engine, job_id) is None
    with engine.begin() as conn:
        conn.execute(
            insert(t.job_results).values(
                id=job_id, job_id=job_id, owner_id="ed-1", files=[], meta={"k": 1}, finished_at=T0, position=9
            )
        )
        conn.execute(
            insert(t.job_logs),
            [
                {"job_id": job_id, "position": pos, "seq": seq, "at": T0, "level": "info", "message": f"{pos}.{seq}"}
                for pos, seq in ((7, 1), (3, 2), (3, 1), (8, 0))
            ],
        )
    result = queries.result_of_job(engine, job_id)
    assert result is not None and result["meta"] == {"k": 1}
    assert [r["message"] for r in queries.first_log_lines(engine, job_id, 3)] == ["3.1", "3.2", "7.1"]
    assert queries.first_log_lines(engine, "other", 3) == []
