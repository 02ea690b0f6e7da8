"""The WebSocket feed's messages (``/ws/jobs/{job_id}/``, ``/ws/jobs/``, ``/ws/events/``),
as :mod:`api.routers.live` and :mod:`api.live` send them. OpenAPI has no WebSocket
operations: :func:`websocket_doc` puts these models in ``components.schemas`` and describes
the feed in the document's ``x-websocket`` extension."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from api.schemas.jobs import Actor, JobOut

REF = "#/components/schemas/{model}"


class WsAuth(BaseModel):
    """Client → server, the first message when no ``?ticket=`` was given (within 5 s):
    an access token, and where to resume (``after``: a position, or its decimal string)."""

    model_config = ConfigDict(title="WsAuth")

    type: Literal["auth"]
    token: str = Field(description="an access token (POST /api/token/)")
    after: int | str | None = Field(default=None, description="resume after this global position (≥ 0)")


class WsJobMessage(BaseModel):
    """``/ws/jobs/`` and ``/ws/jobs/{job_id}/``: one stored event of a visible job; ``job``
    is the job as the read model shows it after that event. ``type``: ``job_status_change``
    (submitted, started, completed, failed, cancelled, retried), ``job_progress``
    (``JobProgressed``) or ``job_update`` (any other event of the job)."""

    type: Literal["job_update", "job_progress", "job_status_change"]
    position: int = Field(ge=1, description="the event's global position (resume with after=)")
    event_type: str = Field(examples=["JobProgressed"])
    job_id: str = Field(description="the job's id (a UUID)")
    job: JobOut


class WsEventMessage(BaseModel):
    """``/ws/events/`` (admins): every stored event, as its envelope."""

    type: Literal["event"]
    position: int = Field(ge=1, description="the event's global position (resume with after=)")
    event_type: str = Field(examples=["ProjectCreated"])
    aggregate_id: str = Field(description="the aggregate's id (a UUID)")
    version: int = Field(ge=1, description="the aggregate's version after the event")
    occurred_at: datetime
    actor: Actor | None
    correlation_id: str | None
    data: dict[str, Any]


class WsPing(BaseModel):
    """Sent after 25 s without another message."""

    type: Literal["ping"]


class WsResyncRequired(BaseModel):
    """The client fell too far behind: ``position`` is the last one delivered; the server
    closes (1013) and the client reconnects with ``after=position``."""

    type: Literal["resync_required"]
    position: int = Field(ge=0)


WsServerMessage = Annotated[WsJobMessage | WsEventMessage | WsPing | WsResyncRequired, Field(discriminator="type")]
"""Any message the server sends (discriminated by ``type``)."""

MESSAGE_MODELS: tuple[type[BaseModel], ...] = (WsAuth, WsJobMessage, WsEventMessage, WsPing, WsResyncRequired)

#: Close codes of the feed.
CLOSE_CODES = {
    "1013": "too slow: sent after resync_required",
    "4401": "bad authentication, or the token expired, its session was revoked or its user deactivated",
    "4403": "forbidden: /ws/events/ for a non-admin, or a job you may not see",
    "4429": "too many live connections of this user (AIORCH_MAX_LIVE_PER_USER)",
}


def websocket_components() -> dict[str, dict[str, Any]]:
    """The message schemas by name, ``WsServerMessage`` (their discriminated union) included;
    references point into ``#/components/schemas`` (``JobOut``, ``Actor``)."""
    out: dict[str, dict[str, Any]] = {}
    for model in MESSAGE_MODELS:
        schema = model.model_json_schema(ref_template=REF)
        schema.pop("$defs", None)
        out[model.__name__] = schema
    union = TypeAdapter(WsServerMessage).json_schema(ref_template=REF)
    union.pop("$defs", None)
    out["WsServerMessage"] = {"title": "WsServerMessage", "description": "Any message the server sends.", **union}
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def websocket_doc() -> dict[str, Any]:
    """The ``x-websocket`` extension: each feed's URL, who may open it, and the schemas of
    what the client sends and what the server sends."""
    server = _ref("WsServerMessage")
    auth = "`?ticket=` (POST /api/ws-ticket/, single use, 30 s), or a first `WsAuth` message within 5 s"
    return {
        "description": "Live feeds over WebSocket (`ws://` or `wss://` on the API's host). Authenticate with "
        f"{auth}; `after=P` (query or `WsAuth`) first replays every visible event after position P, then goes "
        "live with no gap and no duplicate. Messages are JSON text frames, in global-position order, pushed only "
        "after the read models include them.",
        "authentication": auth,
        "client_messages": [_ref("WsAuth")],
        "close_codes": CLOSE_CODES,
        "feeds": {
            "/ws/jobs/{job_id}/": {
                "description": "one job's events (a job you may see, else 4403)",
                "messages": [_ref("WsJobMessage"), _ref("WsPing"), _ref("WsResyncRequired")],
            },
            "/ws/jobs/": {
                "description": "the events of every job you may see",
                "messages": [_ref("WsJobMessage"), _ref("WsPing"), _ref("WsResyncRequired")],
            },
            "/ws/events/": {
                "description": "every stored event, as its envelope (admins, else 4403)",
                "messages": [_ref("WsEventMessage"), _ref("WsPing"), _ref("WsResyncRequired")],
            },
        },
        "server_messages": server,
    }
