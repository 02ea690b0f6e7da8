"""``aiorch seed --demo`` loads every type in every status, once."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import func, select

from infra.seed import seed_demo
from projections import tables as t
from tests.conftest import wait_until


def test_demo_seed_is_complete_and_idempotent(system: Any, runner: Any) -> None:
    runner.projector()
    lines: list[str] = []
    assert seed_demo(system, lines.append) is True
    head = system.platform.head()
    projector = system.projector()
    wait_until(lambda: projector.position() >= head, 30)
    with system.engine.connect() as conn:
        users = {r.username: r.role for r in conn.execute(select(t.users.c.username, t.users.c.role))}
        combos = set(conn.execute(select(t.jobs.c.type, t.jobs.c.status)).all())
        results = conn.execute(select(func.count()).select_from(t.job_results)).scalar_one()
        agents = conn.execute(select(func.count()).select_from(t.agents)).scalar_one()
        settings = conn.execute(select(func.count()).select_from(t.settings)).scalar_one()
    assert set(users.values()) == {"admin", "editor", "viewer"}
    assert len(combos) == 7 * 5, "every job type in every status"
    assert results == 7 * 4  # completed jobs: 7 types × 2 projects × 2 owners
    assert agents == 4 and settings >= 4
    assert any("demo only" in line or "demos only" in line for line in lines)
    assert seed_demo(system, lines.append) is False
    assert system.platform.head() == head, "a second seed stored nothing"


def test_demo_jobs_are_left_alone_and_missing_engines_skipped(platform_up: Any, system: Any) -> None:
    import io
    import time
    import wave
    from datetime import UTC, datetime

    from infra.leases import LeaseStore
    from infra.roles import relay

    system.platform.policies = dataclasses.replace(
        system.platform.policies, missing_engine=lambda job_type: ["espeak-ng (Debian package)"] if job_type == "dubbing" else []
    )
    global_before = system.platform.effective_settings("")
    lines: list[str] = []
    assert seed_demo(system, lines.append) is True
    seeded = time.monotonic()
    assert any(line.startswith("skipped the dubbing demo jobs") and "espeak-ng" in line for line in lines), lines
    admin = platform_up["clients"]["admin"]
    head = system.platform.head()
    jobs = admin.get("/api/jobs/", params={"page_size": 500}, headers={"Aiorch-Min-Position": str(head)}).json()["results"]
    assert jobs and all(j["demo"] for j in jobs) and not any(j["type"] == "dubbing" for j in jobs)
    assert {k: v for k, v in system.platform.effective_settings("").items() if k != "demo.seeded"} == {
        k: v for k, v in global_before.items() if k != "demo.seeded"
    }, "global settings untouched"

    # a finished demo job carries a real result file
    done = next(j for j in jobs if j["type"] == "tts" and j["status"] == "completed")
    result = admin.get(f"/api/jobs/{done['id']}/result/").json()
    with wave.open(io.BytesIO(admin.get(result["result_file_url"]).content)) as w:
        assert w.getnframes() > 0

    # the user's own job runs at once, not behind the demo jobs
    editor = platform_up["clients"]["editor"]
    own = editor.post(
        "/api/jobs/", json={"project": platform_up["project"], "type": "tts", "parameters": {"text": "Mine."}}
    ).json()
    assert editor.wait_job(own["id"], timeout=120)["status"] == "completed"
    # past the requeue threshold (2 s here) the reconciler, the stale sweep and the reaper leave them alone
    wait_until(lambda: time.monotonic() - seeded > 3 * system.settings.requeue_after_s, 30)
    assert relay(system).reconcile() == 0
    suspects = LeaseStore(system.engine, 0.0).suspect_claims(datetime.now(UTC))
    assert not {c.job_id for c in suspects} & {j["id"] for j in jobs}
    after = {j["id"]: j["status"] for j in admin.get("/api/jobs/", params={"page_size": 500}).json()["results"]}
    assert all(after[j["id"]] == j["status"] for j in jobs), "no demo job moved"
