"""Shaping read-model rows into the contract's JSON (who may see which rows:
:mod:`projections.queries.visibility`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.urls import absolute
from projections.queries import Viewer

Sign = Callable[[str], str]


def iso(value: Any) -> Any:
    """A datetime as ISO 8601, other values unchanged."""
    return value.isoformat() if hasattr(value, "isoformat") else value


def project_json(row: dict[str, Any]) -> dict[str, Any]:
    """``{id, name, description, owner {id, username}, created_at, updated_at, jobs_count}``."""
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "owner": {"id": row["owner_id"], "username": row["owner_username"]},
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "jobs_count": row["jobs_count"],
    }


def job_json(row: dict[str, Any], sign: Sign) -> dict[str, Any]:
    """The contract's job shape; file URLs are absolute signed download links."""
    job_id = row["id"]
    files = {
        field: {
            "name": f["name"],
            "size": f["size"],
            "content_type": f["content_type"],
            "sha256": f["sha256"],
            "url": absolute(sign(f"/api/jobs/{job_id}/files/{field}/")),
        }
        for field, f in (row["input_files"] or {}).items()
    }
    return {
        "id": job_id,
        "project": row["project_id"],
        "type": row["type"],
        "status": row["status"],
        "progress": row["progress"],
        "stage": row["stage"],
        "priority": row["priority"],
        "attempt": row["attempt"],
        "parameters": row["parameters"],
        "agent": row["agent_id"],
        "input_files": files,
        "created_by": {"id": row["created_by_id"], "username": row["created_by_username"]},
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "error": row["error"],
        "has_result": row["has_result"],
        "cancel_requested": row["cancel_requested"],
        "demo": bool(row.get("demo")),
    }


def result_json(row: dict[str, Any], logs: list[dict[str, Any]], sign: Sign) -> dict[str, Any]:
    """The contract's result shape; the first file is the main one."""
    job_id = row["job_id"]
    files = [
        {
            "name": f["name"],
            "content_type": f["content_type"],
            "size": f["size"],
            "url": absolute(sign(f"/api/jobs/{job_id}/result/files/{i}/")),
        }
        for i, f in enumerate(row["files"])
    ]
    main = files[0] if files else None
    return {
        "id": row["id"],
        "job": job_id,
        "result_url": main and main["url"],
        "result_file": main and main["name"],
        "result_file_url": main and main["url"],
        "files": files,
        "logs": logs,
        "meta": row["meta"],
        "finished_at": iso(row["finished_at"]),
    }


def log_json(row: dict[str, Any]) -> dict[str, Any]:
    """``{at, level, message}``."""
    return {"at": iso(row["at"]), "level": row["level"], "message": row["message"]}


def profile_json(row: Viewer) -> dict[str, Any]:
    """``{id, username, email, role, is_active, created_at}``."""
    return {
        "id": row["id"],
        "username": row["username"],
        "email": row["email"],
        "role": row["role"],
        "is_active": row["is_active"],
        "created_at": iso(row["created_at"]),
    }


def setting_json(row: dict[str, Any]) -> dict[str, Any]:
    """``{id, key, value, user, created_at, updated_at}``."""
    return {
        "id": row["id"],
        "key": row["key"],
        "value": row["value"],
        "user": row["user_id"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def agent_json(row: dict[str, Any]) -> dict[str, Any]:
    """``{id, name, description, type, status, configuration, provider, created_by, created_at, updated_at}``."""
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "type": row["type"],
        "status": row["status"],
        "configuration": row["configuration"],
        "provider": row["provider_id"],
        "created_by": {"id": row["owner_id"], "username": row["owner_username"]},
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def provider_json(row: dict[str, Any]) -> dict[str, Any]:
    """``{id, name, kind, base_url, has_api_key, enabled, created_at}`` (never the key)."""
    return {
        "id": row["id"],
        "name": row["name"],
        "kind": row["kind"],
        "base_url": row["base_url"],
        "has_api_key": row["has_api_key"],
        "enabled": row["enabled"],
        "created_at": iso(row["created_at"]),
    }
