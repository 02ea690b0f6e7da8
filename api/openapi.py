"""The OpenAPI document as the server really answers: readable, stable operation ids
(``jobs_list``, ``jobs_create``, ``jobs_retrieve``, ``jobs_cancel``, …), every error status
an operation can send documented as ``application/problem+json`` (:class:`api.schemas.Problem`,
:class:`api.schemas.ValidationProblem` for 422), and no FastAPI ``HTTPValidationError`` (the
server never sends it)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.deps import bearer, current_user, read_position
from api.schemas import PROBLEM_MEDIA_TYPE, Problem, ProblemError, ValidationProblem, problem_response
from api.schemas.job_types import JOB_CREATE_BODY, job_components
from api.schemas.live import websocket_components, websocket_doc

#: Operations that answer without touching the database (no 503).
_NO_DATABASE = {"/health/live", "/health/ready", "/metrics"}
#: Reads only admins may make (403 for the others).
_ADMIN_READS = ("/api/users/", "/api/audit/", "/api/dead-letters/", "/api/providers/")
_ITEM_VERBS = {"GET": "retrieve", "PUT": "update", "PATCH": "partial_update", "DELETE": "destroy", "POST": "create"}
_COLLECTION_VERBS = {"GET": "list", "POST": "create"}
_BODY_METHODS = {"POST", "PUT", "PATCH"}
#: Statuses answered as problems (a 416 of a download has no body).
_PROBLEM_STATUSES = {400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500, 503}
#: Statuses the rules of :func:`error_statuses` cannot see: an id in the body that names
#: nothing visible (404), a token checked without authenticating (401).
_ALSO: dict[tuple[str, str], set[int]] = {
    ("POST", "/api/jobs/"): {404},
    ("POST", "/api/sse-ticket/"): {404},
    ("POST", "/api/settings/"): {404},
    ("POST", "/api/agents/"): {404},
    ("PUT", "/api/agents/{agent_id}/"): {404},
    ("PATCH", "/api/agents/{agent_id}/"): {404},
    ("POST", "/api/token/verify/"): {401},
}


def operation_id(route: APIRoute) -> str:
    """A stable, DRF-like operation id from the path and method: ``GET /api/jobs/`` →
    ``jobs_list``, ``POST /api/jobs/`` → ``jobs_create``, ``GET /api/jobs/{job_id}/`` →
    ``jobs_retrieve`` (``update``, ``partial_update``, ``destroy``), an action
    ``POST /api/jobs/{job_id}/cancel/`` → ``jobs_cancel``, ``GET /api/profiles/me/`` →
    ``profiles_me``; ``/health/live`` → ``health_live``."""
    segments = [s for s in route.path.strip("/").split("/") if s]
    if segments and segments[0] == "api":
        segments = segments[1:]
    static = [re.sub(r"[^a-z0-9]+", "_", s.lower()) for s in segments if not s.startswith("{")]
    method = sorted(route.methods or {"GET"})[0]
    ends_with_param = bool(segments) and segments[-1].startswith("{")
    if ends_with_param:
        verb: str | None = _ITEM_VERBS.get(method, method.lower())
    elif len(static) == 1 and route.path.startswith("/api/"):
        verb = _COLLECTION_VERBS.get(method, method.lower())
    else:
        verb = None
    return "_".join([*static, *([verb] if verb else [])]) or method.lower()


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _calls(dep)


def _parameters(dependant: Dependant) -> Iterator[Any]:
    yield from (*dependant.path_params, *dependant.query_params, *dependant.header_params, *dependant.cookie_params)
    for dep in dependant.dependencies:
        yield from _parameters(dep)


def error_statuses(route: Any) -> set[int]:
    """The problem statuses a route can answer with, from what it depends on: 401 (it
    authenticates), 403 (a write, or an admin-only read), 404 (a path id, or a page past the
    end of a list), 409 (a write can meet the current state; ``?min_position`` beyond the
    head), 400 (a body that does not parse), 413 (a body over the limit), 422 (every route: control characters in any query
    parameter; parameters and bodies), 503 (the database, or read models that lag)."""
    calls = set(_calls(route.dependant))
    codes: set[int] = {422} if route.path in _NO_DATABASE else {422, 503}
    authenticated = bool(calls & {current_user, bearer}) or any(getattr(c, "__name__", "") == "download_viewer" for c in calls)
    writes = bool(route.methods & _BODY_METHODS | ({"DELETE"} & route.methods))
    if authenticated:
        codes.add(401)
        if writes or route.path.startswith(_ADMIN_READS):
            codes.add(403)
        if writes:
            codes.add(409)
    if read_position in calls:
        codes |= {409, 503}
    if route.dependant.path_params or any(p.name == "page" for p in _parameters(route.dependant)):
        codes.add(404)
    if route.methods & _BODY_METHODS:
        codes.add(413)
    if route.body_field is not None:
        codes.add(400)  # a body that does not parse (malformed JSON)
    for method in route.methods:
        codes |= _ALSO.get((method, route.path), set())
    return codes


def _api_routes(app: FastAPI) -> Iterator[Any]:
    """Every API route as the app serves it (prefixes applied): FastAPI's route contexts."""
    for context in routing.iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute) and context.include_in_schema:
            yield context


def document_errors(app: FastAPI, schema: dict[str, Any]) -> None:
    """Declare in ``schema`` on every operation the problem statuses it can answer with;
    statuses a route declares itself (429, 415, …) keep their own descriptions and gain the
    problem body."""
    for route in _api_routes(app):
        for method in route.methods:
            operation = schema["paths"].get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status in sorted(error_statuses(route)):
                responses.setdefault(str(status), problem_response(status))
            for status, answer in list(responses.items()):
                if status.isdigit() and int(status) in _PROBLEM_STATUSES and PROBLEM_MEDIA_TYPE not in answer.get("content", {}):
                    responses[status] = problem_response(int(status), answer.get("description") or None)
            operation["responses"] = dict(sorted(responses.items()))


def _readable_page_names(schema: dict[str, Any]) -> dict[str, Any]:
    """``Page_JobOut_`` (pydantic's name of ``Page[JobOut]``) → ``JobPage``, refs included."""
    names = {n: f"{n[5:-1].removesuffix('Out')}Page" for n in schema["components"]["schemas"] if re.fullmatch(r"Page_\w+_", n)}
    if not names:
        return schema
    text = json.dumps(schema)
    for old, new in names.items():
        text = text.replace(f'"#/components/schemas/{old}"', f'"#/components/schemas/{new}"')
    renamed: dict[str, Any] = json.loads(text)
    components = renamed["components"]["schemas"]
    for old, new in names.items():
        components[new] = components.pop(old)
        components[new]["title"] = new
    renamed["components"]["schemas"] = dict(sorted(components.items()))
    return renamed


def document_job_types(schema: dict[str, Any]) -> None:
    """Jobs per type in ``schema``: ``POST /api/jobs/`` takes ``JobIn`` (JSON) or ``JobForm``
    (multipart), and ``JobOut`` is a ``oneOf`` per type, each discriminated by ``type``
    (:mod:`api.schemas.job_types`)."""
    schemas = schema["components"]["schemas"]
    schemas.update(job_components(schemas["JobOut"]))
    create = schema["paths"]["/api/jobs/"]["post"]
    create["requestBody"] = JOB_CREATE_BODY
    schema["components"]["schemas"] = dict(sorted(schemas.items()))


def document_websockets(schema: dict[str, Any]) -> None:
    """The WebSocket feed in ``schema``: its message schemas in ``components`` (``WsAuth``,
    ``WsJobMessage``, ``WsEventMessage``, ``WsPing``, ``WsResyncRequired``, their union
    ``WsServerMessage``), the feeds in the root's ``x-websocket``, and a pointer to both in
    the document's and the ticket operation's descriptions."""
    schemas = schema["components"]["schemas"]
    schemas.update(websocket_components())
    schema["components"]["schemas"] = dict(sorted(schemas.items()))
    schema["x-websocket"] = websocket_doc()
    pointer = (
        "Live feeds: WebSocket `/ws/jobs/{job_id}/`, `/ws/jobs/` and `/ws/events/`, described in the document's "
        "`x-websocket`; messages `WsJobMessage`, `WsEventMessage`, `WsPing`, `WsResyncRequired` (any of them: "
        "`WsServerMessage`), and `WsAuth` from the client, in `components.schemas`."
    )
    info = schema.setdefault("info", {})
    info["description"] = f"{info.get('description', '')}\n\n{pointer}".strip()
    ticket = schema["paths"].get("/api/ws-ticket/", {}).get("post")
    if ticket is not None:
        ticket["description"] = f"{ticket.get('description', '')}\n\n{pointer}".strip()


#: OpenAPI links: what a create answers (201, or 202 before the read models show it) names
#: the resource the operations below take, by ``$response.body#/id``.
LINKS: dict[tuple[str, str], dict[str, tuple[str, str]]] = {
    ("/api/jobs/", "post"): {
        "GetJob": ("jobs_retrieve", "job_id"),
        "CancelJob": ("jobs_cancel", "job_id"),
        "JobHistory": ("jobs_history", "job_id"),
        "JobLogs": ("jobs_logs", "job_id"),
    },
    ("/api/projects/", "post"): {
        "GetProject": ("projects_retrieve", "project_id"),
        "ProjectJobs": ("projects_jobs", "project_id"),
        "UpdateProject": ("projects_partial_update", "project_id"),
    },
}


def document_links(schema: dict[str, Any]) -> None:
    """Declare :data:`LINKS` on the 201 and 202 answers of the creates (operations that are
    not in ``schema`` are left out)."""
    ids = {op.get("operationId") for item in schema["paths"].values() for op in item.values() if isinstance(op, dict)}
    for (path, method), links in LINKS.items():
        operation = schema["paths"].get(path, {}).get(method)
        if operation is None:
            continue
        for status in ("201", "202"):
            answer = operation["responses"].get(status)
            if answer is None:
                continue
            answer["links"] = {
                name: {"operationId": target, "parameters": {param: "$response.body#/id"}}
                for name, (target, param) in links.items()
                if target in ids
            }


def install(app: FastAPI) -> None:
    """Post-process the generated document: the errors of every operation, the problem
    schemas in ``components``, FastAPI's validation error schemas gone."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        document_errors(app, schema)
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (ProblemError, Problem, ValidationProblem):
            component = model.model_json_schema(ref_template="#/components/schemas/{model}")
            component.pop("$defs", None)
            schemas[model.__name__] = component
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        document_job_types(schema)
        document_websockets(schema)
        document_links(schema)
        schema = _readable_page_names(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
