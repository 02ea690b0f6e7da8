"""``aiorch seed --demo`` loads every type in every status, once."""

from __future__ import annotations

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
