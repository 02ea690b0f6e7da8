"""``/api/projects/``: create, list and read projects."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.deps import CommandCtx, CurrentUser, ReadPosition, Services, ServicesDep, after_write, created
from api.pagination import PageParams, page_params, paginate
from api.schemas import ACCEPTED, LAGGING, JobOut, Page, ProjectIn, ProjectOut, ok
from api.views import job_json, project_json
from commands.context import Context
from commands.errors import NotFound
from commands.messages import ArchiveProject, CreateProject, UpdateProject
from projections import tables as t
from projections.queries import Viewer, order_by, search_filter, visible_jobs, visible_projects

router = APIRouter(prefix="/api/projects", tags=["projects"])
#: ``?ordering=`` fields (comma-separated, ``-`` for descending; unknown ones are ignored)
ORDERING_FIELDS = ("name", "created_at")


def load_project(services: Services, user: Viewer, project_id: str) -> dict[str, Any]:
    """A visible project's row. Raises NotFound."""
    with services.engine.connect() as conn:
        row = conn.execute(visible_projects(select(t.projects), user).where(t.projects.c.id == project_id)).mappings().first()
    if row is None:
        raise NotFound(f"no project {project_id}")
    return dict(row)


@router.get("/", dependencies=[ReadPosition], response_model=None, responses=ok(Page[ProjectOut]))
def list_projects(
    request: Request,
    services: ServicesDep,
    user: CurrentUser,
    params: Annotated[PageParams, Depends(page_params)],
    search: Annotated[str | None, Query(description="every term must occur in the name or the description")] = None,
    owner: str | None = None,
    ordering: Annotated[str | None, Query(description="comma-separated fields of name, created_at; `-` descending")] = None,
) -> dict[str, Any]:
    """Projects the user may see, newest first. Filters ``?search=`` (name, description) and
    ``?owner=``; ``?search=`` and ``?ordering=`` as DRF reads them."""
    c = t.projects.c
    stmt = visible_projects(select(t.projects), user)
    matches = search_filter(search, [c.name, c.description])
    if matches is not None:
        stmt = stmt.where(matches)
    if owner:
        stmt = stmt.where(c.owner_id == owner)
    stmt = order_by(stmt, ordering, {"name": c.name, "created_at": c.created_at}, "-created_at", c.id)
    with services.engine.connect() as conn:
        return paginate(request, conn, stmt, params, project_json)


@router.post(
    "/",
    status_code=201,
    response_model=ProjectOut,
    responses=ACCEPTED,
)
async def create_project(body: ProjectIn, response: Response, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Any:
    """Create a project owned by the caller (editors and admins)."""
    project_id, position = await services.command(
        services.platform.create_project, CreateProject(body.name, body.description), ctx
    )
    return await created(
        services,
        position,
        f"/api/projects/{project_id}/",
        str(project_id),
        lambda: project_json(load_project(services, user, str(project_id))),
    )


@router.get("/{project_id}/", response_model=ProjectOut, dependencies=[ReadPosition])
def get_project(project_id: UUID, services: ServicesDep, user: CurrentUser) -> dict[str, Any]:
    """One project."""
    return project_json(load_project(services, user, str(project_id)))


@router.get("/{project_id}/jobs/", dependencies=[ReadPosition], response_model=None, responses=ok(Page[JobOut]))
def project_jobs(
    project_id: UUID,
    request: Request,
    services: ServicesDep,
    user: CurrentUser,
    params: Annotated[PageParams, Depends(page_params)],
) -> dict[str, Any]:
    """The project's jobs, newest first."""
    load_project(services, user, str(project_id))
    stmt = visible_jobs(select(t.jobs), user).where(t.jobs.c.project_id == str(project_id))
    with services.engine.connect() as conn:
        return paginate(
            request,
            conn,
            stmt.order_by(t.jobs.c.created_at.desc(), t.jobs.c.id),
            params,
            lambda r: job_json(r, services.signer.for_user(user)),
        )


class ProjectPatch(BaseModel):
    """Fields to change."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)


async def _update(
    project_id: UUID, name: str | None, description: str | None, services: Services, ctx: Context, user: Viewer
) -> Response:
    position = await services.command(services.platform.update_project, UpdateProject(project_id, name, description), ctx)
    return await after_write(services, position, lambda: project_json(load_project(services, user, str(project_id))))


@router.put("/{project_id}/", response_model=ProjectOut, responses=LAGGING)
async def replace_project(
    project_id: UUID, body: ProjectIn, services: ServicesDep, ctx: CommandCtx, user: CurrentUser
) -> Response:
    """Replace a project's name and description (owner or admins)."""
    return await _update(project_id, body.name, body.description, services, ctx, user)


@router.patch("/{project_id}/", response_model=ProjectOut, responses=LAGGING)
async def update_project(
    project_id: UUID, body: ProjectPatch, services: ServicesDep, ctx: CommandCtx, user: CurrentUser
) -> Response:
    """Change a project's name and/or description (owner or admins)."""
    return await _update(project_id, body.name, body.description, services, ctx, user)


@router.delete("/{project_id}/", status_code=204, response_class=Response, responses=LAGGING)
async def archive_project(project_id: UUID, services: ServicesDep, ctx: CommandCtx) -> Response:
    """Archive a project (204): it leaves lists, its history stays replayable; its pending
    jobs are cancelled and running ones asked to stop."""
    position = await services.command(services.platform.archive_project, ArchiveProject(project_id), ctx)
    return await after_write(services, position)
