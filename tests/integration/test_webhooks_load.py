"""``bench/webhooks.py`` at a small N: job events from four writers for ten endpoints with
mixed subscriptions and owners; every (endpoint, matching event) pair is delivered exactly
once, verified by a real receiver on loopback with the ``standardwebhooks`` library."""

from __future__ import annotations

from typing import Any

from bench.webhooks import (
    VerifyingReceiver,
    check_exactly_once,
    create_endpoints,
    expected_pairs,
    produce,
    wait_delivered,
)
from commands.context import Actor, Context
from commands.messages import CreateProject
from infra.roles import create_user
from tests.conftest import Runner

EVENTS = 80  # 20 jobs of four events


def test_every_endpoint_and_matching_event_pair_is_delivered_exactly_once(settings: Any) -> None:
    from infra.bootstrap import bootstrap
    from infra.dispatcher import build_dispatcher

    system = bootstrap(settings.model_copy(update={"webhook_allow_private": True}))
    runner = Runner(system, {})
    receiver = VerifyingReceiver()
    try:
        owners = {}
        for name, role in (("editor", "editor"), ("admin", "admin"), ("other", "editor")):
            user_id = create_user(system, name, f"{name}-password", role)
            owners[name] = Context(Actor(id=user_id, username=name, role=role), "test")
        project_id, _ = system.platform.create_project(CreateProject("Load"), owners["editor"])
        endpoints = create_endpoints(system.platform, receiver, owners, 10)
        dispatcher = runner.start(build_dispatcher(system), "dispatcher")

        load = produce(system.platform, owners["editor"], project_id, EVENTS, writers=4)
        assert len(load.events) == EVENTS
        expected = expected_pairs(endpoints, load)
        other = next(e for e in endpoints if e.owner_id == owners["other"].actor.id)
        assert not any(path == other.path for path, _ in expected), "another editor's endpoint sees none of the jobs"
        assert len({path for path, _ in expected}) == 9

        assert wait_delivered(receiver, len(expected), 60), f"{receiver.delivered()} of {len(expected)} delivered"
        runner.stop(dispatcher)  # in-flight attempts finish: a late duplicate would show below
        assert check_exactly_once(receiver, expected) == {"missing": [], "twice": {}, "unexpected": [], "forged": []}
    finally:
        runner.close()
        receiver.close()
        system.close()
