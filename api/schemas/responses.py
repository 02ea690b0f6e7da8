"""Errors (RFC 9457, ``application/problem+json``) and the OpenAPI entries of the answers routes build themselves."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from api.schemas.common import Accepted, Lagging, Page
from api.schemas.jobs import HistoryItem

# -- documenting answers that routes send as ready responses ----------------------------------


def ok(model: Any, status: int = 200, description: str = "Successful Response") -> dict[int | str, dict[str, Any]]:
    """``responses=`` entry documenting a 2xx body that the route builds itself (FastAPI
    neither validates nor filters it; the contract tests check that it conforms)."""
    return {status: {"model": model, "description": description}}


#: ``responses=`` of a create that may answer 202 before the read models show it.
ACCEPTED = ok(Accepted, 202, "accepted; the read models have not shown it yet: poll `Location`")
#: ``responses=`` of a write that may answer 202 before the read models show it.
LAGGING = ok(Lagging, 202, "done; the read models have not shown it yet: read with `?min_position=position`")
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_FILE_TYPES = ("audio/*", "video/*", "image/*", "text/*", "application/*")
#: ``responses=`` of a file download: the file (200) or a byte range of it (206).
BINARY_DOWNLOAD: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the file, with its sniffed Content-Type, Content-Length and Content-Disposition",
        "content": dict.fromkeys(_FILE_TYPES, _BINARY),
    },
    206: {"description": "the requested byte range (`Range`)", "content": dict.fromkeys(_FILE_TYPES, _BINARY)},
    416: {"description": "`Range` not satisfiable (no body)"},
}


# -- errors (RFC 9457, application/problem+json) ---------------------------------------------

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemError(BaseModel):
    """One invalid input: where (``["body", "parameters", "text"]``) and why."""

    loc: list[str | int] = Field(examples=[["body", "parameters", "text"]])
    msg: str = Field(examples=["Field required"])


class Problem(BaseModel):
    """An RFC 9457 problem; ``instance`` is the request id (``X-Request-ID``). ``errors``
    appears when the problem is about given values (always on a 422)."""

    type: str = Field(examples=["https://aiorch.dev/problems/not-found"])
    title: str = Field(examples=["Not found"])
    status: int = Field(ge=400, le=599, examples=[404])
    detail: str = Field(examples=["no job 1b4e28ba-2fa1-11d2-883f-0016d3cca427"])
    instance: str = Field(description="the request id (X-Request-ID)")
    errors: list[ProblemError] | None = Field(default=None, description="what was refused, when known")


class ValidationProblem(Problem):
    """A 422 problem: ``errors`` lists every invalid input."""

    errors: list[ProblemError]


_STATUS_TEXT = {
    400: "Bad request: the body does not parse",
    401: "Not authenticated: a missing, expired, tampered or revoked token (or bad credentials)",
    403: "Forbidden: authenticated, but without the right",
    404: "Not found, or not visible to you",
    409: "Conflict with the current state, or ?min_position beyond the store's head",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation error: `errors` lists each invalid input",
    429: "Too many requests: retry after `Retry-After` seconds",
    503: "Service unavailable (the read models lag or the database is down): retry after `Retry-After`",
}


def problem_response(status: int, description: str | None = None) -> dict[str, Any]:
    """The OpenAPI response object of one problem status: :class:`ValidationProblem` for
    422, else :class:`Problem`, under ``application/problem+json``."""
    schema = "ValidationProblem" if status == 422 else "Problem"
    return {
        "description": description or _STATUS_TEXT.get(status, "Error"),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def problems(*statuses: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for problem statuses; ``described`` gives own descriptions
    (``_409="the agent is inactive"``)."""
    out: dict[int | str, dict[str, Any]] = {s: problem_response(s) for s in statuses}
    for key, text in described.items():
        status = int(key.lstrip("_"))
        out[status] = problem_response(status, text)
    return out


#: ``responses=`` of ``/metrics``: Prometheus' text format.
METRICS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}},
}


def events_responses() -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a job's feed: server-sent events, or JSON pages of history items."""
    page = Page[HistoryItem]
    return {
        200: {
            "model": page,
            "description": "`Accept: text/event-stream`: unnamed events (`id:` the position, `data:` a "
            "HistoryItem as JSON); else a JSON page of history items after `?after=`",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        429: {"description": "too many live connections of this user"},
    }
