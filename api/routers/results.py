"""``/api/job-results/``: results of the jobs the user may see."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from api.deps import CurrentUser, ReadPosition, ServicesDep
from api.job_access import load_job, result_of, result_row
from api.pagination import PageParams, page_params, paginate
from api.schemas import JobOut, Page, ResultOut, ok
from api.views import job_json, result_json
from projections import tables as t
from projections.queries import visible_jobs

router = APIRouter(prefix="/api/job-results", tags=["results"])


@router.get("/", dependencies=[ReadPosition], response_model=None, responses=ok(Page[ResultOut]))
def list_results(
    request: Request,
    services: ServicesDep,
    user: CurrentUser,
    params: Annotated[PageParams, Depends(page_params)],
    type: str | None = None,
) -> dict[str, Any]:
    """Results of visible jobs, newest first (logs left out; see each result). ``?type=``."""
    visible = visible_jobs(select(t.jobs.c.id), user)
    if type:
        visible = visible.where(t.jobs.c.type == type)
    stmt = select(t.job_results).where(t.job_results.c.job_id.in_(visible.scalar_subquery()))
    stmt = stmt.order_by(t.job_results.c.finished_at.desc(), t.job_results.c.id)
    with services.engine.connect() as conn:
        return paginate(request, conn, stmt, params, lambda r: result_json(r, [], services.signer.for_user(user)))


@router.get("/{result_id}/", response_model=ResultOut, dependencies=[ReadPosition])
def get_result(result_id: UUID, services: ServicesDep, user: CurrentUser) -> dict[str, Any]:
    """One result (its id is the job's id)."""
    load_job(services, user, str(result_id))
    return result_of(services, str(result_id), user)


@router.get("/{result_id}/job_details/", response_model=JobOut, dependencies=[ReadPosition])
def job_details(result_id: UUID, services: ServicesDep, user: CurrentUser) -> dict[str, Any]:
    """The job a result belongs to."""
    result_row(services, str(result_id))
    return job_json(load_job(services, user, str(result_id)), services.signer.for_user(user))
