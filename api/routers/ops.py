"""Engines catalogue and health checks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import CurrentUser, ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/api/engines/")
def engines(services: ServicesDep, user: CurrentUser) -> list[dict[str, Any]]:
    """``[{type, engine, available, missing?, languages, voices}]`` for every job type."""
    return list(services.catalog())


@router.get("/health/live")
def live() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/health/ready")
def ready(services: ServicesDep) -> JSONResponse:
    """``{status: ok|degraded|down, checks}``; 503 only when the database (which the API needs) is down."""
    checks: dict[str, Any] = {}
    try:
        with services.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
        head = services.platform.recorder.max_notification_id() or 0
        checks["projection_lag"] = max(head - services.projected_position(), 0)
    except Exception as exc:  # noqa: BLE001 - any failure means the database is down
        checks["database"] = f"down: {type(exc).__name__}"
    status = "ok" if checks["database"] == "ok" else "down"
    return JSONResponse({"status": status, "checks": checks}, status_code=200 if status == "ok" else 503)
