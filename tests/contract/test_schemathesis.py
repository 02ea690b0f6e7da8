"""Schemathesis against the running API (issue 12): every operation of ``/openapi.json``,
as an admin and as a viewer, with a fixed seed (``derandomize``) and a bounded number of
examples per operation (``AIORCH_FUZZ_EXAMPLES``, default 6), positive and negative data.

Four checks must hold on every answer: ``not_a_server_error``, ``status_code_conformance``,
``content_type_conformance`` and ``response_schema_conformance``. Each example runs every
check separately, so the figures printed at the end (and written to
``$AIORCH_FUZZ_REPORT`` when set, JSON) count the failing operations of each check, not only
the first one met. Left out: the operations that end the fuzzing account's own session (its
password, logout, deactivation) — fuzzing them would log the rest of the run out. The SSE
feed (``/events/``) is asked for JSON pages (``Accept: application/json``).

The stateful phase (:func:`test_api_conforms_statefully`) chains calls through the
document's OpenAPI links (declared ones: create a project → read, patch it, list its jobs;
create a job → read, cancel, its history and logs; and those Schemathesis infers from the
schemas), the same checks on every call, ``SCENARIOS`` scenarios of at most ``STEPS`` calls
with a fixed seed. The server's state moves between scenarios (what one created, the next
one lists), so Hypothesis can meet a replay that draws differently (``Flaky``): as
Schemathesis' own runner does, that ends the run, whose answers stay checked and counted; the
run is started three times at most."""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Flaky, Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS: dict[str, Callable[..., Any]] = {
    "not_a_server_error": not_a_server_error,
    "status_code_conformance": status_code_conformance,
    "content_type_conformance": content_type_conformance,
    "response_schema_conformance": response_schema_conformance,
}
#: (method, path) of the operations that end the fuzzing account's own session.
EXCLUDED = {
    ("POST", "/api/token/logout/"),
    ("POST", "/api/profiles/me/password/"),
    ("POST", "/api/users/{user_id}/deactivate/"),
    ("POST", "/api/users/{user_id}/password/"),
}
EXAMPLES = int(os.environ.get("AIORCH_FUZZ_EXAMPLES", "6"))
#: Scenarios of the stateful phase (``AIORCH_FUZZ_SCENARIOS``) and calls per scenario at most.
SCENARIOS = int(os.environ.get("AIORCH_FUZZ_SCENARIOS", "25"))
STEPS = 6


class Tally:
    """Cases run and failing operations per check, for one role."""

    def __init__(self) -> None:
        self.operations: set[str] = set()
        self.cases = 0
        self.statuses: Counter[int] = Counter()
        self.failures: dict[str, set[str]] = defaultdict(set)
        self.samples: dict[str, str] = {}

    def figures(self) -> dict[str, Any]:
        return {
            "operations": len(self.operations),
            "cases": self.cases,
            "answers_2xx": sum(n for status, n in self.statuses.items() if status < 300),
            "failing_operations": {name: len(self.failures.get(name, ())) for name in CHECKS},
            "failures": {name: sorted(ops) for name, ops in self.failures.items()},
            "operations_run": sorted(self.operations),
        }


@pytest.fixture(params=["admin", "viewer"])
def fuzz_role(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fuzz_target(platform_up: dict[str, Any], fuzz_role: str, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The running API, a token of ``fuzz_role``, and the tally of the run (its figures
    written to ``$AIORCH_FUZZ_REPORT.<role>.json``, ``….stateful.<role>.json`` for the
    stateful phase)."""
    phase = "stateful " if request.node.name.startswith("test_api_conforms_statefully") else ""
    client = platform_up["clients"][fuzz_role]
    # something to find: a job of the editor's project (no processor needed: it stays pending)
    editor = platform_up["clients"]["editor"]
    editor.post("/api/jobs/", json={"project": platform_up["project"], "type": "tts", "parameters": {"text": "Hi."}})
    tally = Tally()
    yield {"base": platform_up["base"], "auth": client.http.headers["Authorization"], "tally": tally}
    figures = tally.figures()
    print(
        f"\nschemathesis {phase}as {fuzz_role}: "
        + json.dumps({k: v for k, v in figures.items() if k not in ("failures", "operations_run")})
    )
    for name, ops in figures["failures"].items():
        print(f"  {name}: {', '.join(ops)}")
        for op in ops:
            print(f"    e.g. {op}: {tally.samples.get(name + ' ' + op, '')[:300]}")
    path = os.environ.get("AIORCH_FUZZ_REPORT")
    if path:
        with open(f"{path}.{phase.strip() + '.' if phase else ''}{fuzz_role}.json", "w") as fh:
            json.dump(figures, fh, indent=1)


def test_api_conforms_to_its_openapi(fuzz_target: dict[str, Any]) -> None:
    """No 5xx, and every status, content type and body as the document declares it, on
    every operation (positive and negative data)."""
    tally: Tally = fuzz_target["tally"]
    base = fuzz_target["base"]
    headers = {"Authorization": fuzz_target["auth"], "Accept": "application/json"}
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) > 50
    for operation in operations:
        if (operation.method.upper(), operation.path) in EXCLUDED:
            continue
        tally.operations.add(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run_operation(operation, mode, base, headers, tally)
    figures = tally.figures()["failing_operations"]
    assert figures == dict.fromkeys(CHECKS, 0), tally.figures()["failures"]


def run_operation(operation: Any, mode: Any, base: str, headers: dict[str, str], tally: Tally) -> None:
    """``EXAMPLES`` cases of ``operation`` in ``mode``; each check's failures tallied."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def one(case: Any) -> None:
        tally.cases += 1
        response = case.call(base_url=base, headers=headers, timeout=30)
        tally.statuses[response.status_code] += 1
        for name, check in CHECKS.items():
            try:
                case.validate_response(response, checks=[check], headers=headers)
            except (AssertionError, FailureGroup) as exc:  # that check failed
                tally.failures[name].add(operation.label)
                tally.samples.setdefault(f"{name} {operation.label}", f"{response.status_code} {str(exc)[:400]!r}")

    with contextlib.suppress(Unsatisfiable):  # nothing to negate (no parameters, no body)
        one()


def test_api_conforms_statefully(fuzz_target: dict[str, Any]) -> None:
    """The stateful phase: sequences of calls that pass what one answered (an id) to the
    next, through the document's links; no 5xx, and every answer as documented."""
    tally: Tally = fuzz_target["tally"]
    base = fuzz_target["base"]
    headers = {"Authorization": fuzz_target["auth"], "Accept": "application/json"}
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    for method, path in EXCLUDED:
        schema = schema.exclude(method=method, path=path)
    machine = schema.as_state_machine()

    class Scenario(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base, "headers": headers, "timeout": 30}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            label = case.operation.label
            tally.operations.add(label)
            tally.cases += 1
            tally.statuses[response.status_code] += 1
            for name, check in CHECKS.items():
                try:
                    case.validate_response(response, checks=[check], headers=headers, transport_kwargs=kwargs)
                except (AssertionError, FailureGroup) as exc:
                    tally.failures[name].add(label)
                    tally.samples.setdefault(f"{name} {label}", f"{response.status_code} {str(exc)[:400]!r}")

    config = settings(
        max_examples=SCENARIOS,
        stateful_step_count=STEPS,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    for _ in range(3):  # the server's state moves between scenarios: a replay can draw differently
        try:
            Scenario.run(settings=config)
            break
        except Flaky:  # as Schemathesis' own runner does: the suite ends; what it found stays in the tally
            continue
    assert tally.cases > SCENARIOS
    figures = tally.figures()["failing_operations"]
    assert figures == dict.fromkeys(CHECKS, 0), tally.figures()["failures"]
