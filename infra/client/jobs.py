"""The client's job requests: ``--param``/``--file`` parsing, submitting a job (to the
caller's project named ``cli`` by default) and listing jobs."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from infra.client.session import USAGE, ClientError, Session


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` → ``{k: v}``; a value that is a JSON literal (number, true/false,
    null, object, array, "quoted string") is taken as JSON, else as the string itself.

    Raises:
        ClientError: (exit 2) a pair without ``=``.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ClientError(f"--param {pair!r}: expected KEY=VALUE", USAGE)
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def parse_files(pairs: list[str]) -> dict[str, Path]:
    """``["field=path", ...]`` → ``{field: Path}``.

    Raises:
        ClientError: (exit 2) a pair without ``=`` or a path that is not a file.
    """
    out: dict[str, Path] = {}
    for pair in pairs:
        field, sep, name = pair.partition("=")
        if not sep or not field:
            raise ClientError(f"--file {pair!r}: expected FIELD=PATH", USAGE)
        path = Path(name).expanduser()
        if not path.is_file():
            raise ClientError(f"--file {pair!r}: no such file", USAGE)
        out[field] = path
    return out


def default_project(session: Session) -> str:
    """The id of the caller's project named ``cli``, created when there is none."""
    page = session.json("GET", "/api/projects/", params={"search": "cli", "page_size": 500})
    for project in page["results"]:
        if project["name"] == "cli" and project["owner"]["username"] == session.creds["username"]:
            return str(project["id"])
    return str(
        session.json("POST", "/api/projects/", json={"name": "cli", "description": "jobs submitted by aiorch submit"})["id"]
    )


def submit(
    session: Session, job_type: str, project: str | None, params: dict[str, Any], files: dict[str, Path], priority: str | None
) -> str:
    """``POST /api/jobs/`` (JSON, or multipart when there are files); returns the job id.

    Raises:
        ClientError: refused (exit 2 on 415/422, else 1).
    """
    project = project or default_project(session)
    if files:
        data = {"project": project, "type": job_type, "parameters": json.dumps(params)}
        if priority:
            data["priority"] = priority
        with contextlib.ExitStack() as stack:
            uploads = {field: (path.name, stack.enter_context(path.open("rb"))) for field, path in files.items()}
            body = session.json("POST", "/api/jobs/", data=data, files=uploads)
    else:
        payload: dict[str, Any] = {"project": project, "type": job_type, "parameters": params}
        if priority:
            payload["priority"] = priority
        body = session.json("POST", "/api/jobs/", json=payload)
    return str(body["id"])


def list_jobs(session: Session, filters: dict[str, Any], as_json: bool) -> None:
    """``GET /api/jobs/`` with ``filters``, printed as a Rich table (or JSON lines)."""
    page = session.json("GET", "/api/jobs/", params={k: v for k, v in filters.items() if v is not None})
    if as_json:
        for job in page["results"]:
            print(json.dumps(job))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{page['count']} jobs" + (" (first page)" if page.get("next") else ""))
    for column in ("id", "type", "status", "progress", "stage", "priority", "created_at", "error"):
        table.add_column(column, no_wrap=column in ("id", "created_at"))
    for job in page["results"]:
        error = job.get("error") or {}
        table.add_row(
            str(job["id"]),
            job["type"],
            job["status"],
            f"{float(job.get('progress') or 0):.0f}%",
            job.get("stage") or "",
            job.get("priority") or "",
            str(job["created_at"])[:19],
            error.get("code") or "",
        )
    (Console() if sys.stdout.isatty() else Console(width=200)).print(table)
