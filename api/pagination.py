"""DRF-style page-number pagination: ``{count, next, previous, results}``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from pydantic import BaseModel
from sqlalchemy import Connection, Select, func, select

MAX_PAGE_SIZE = 500
#: the highest ``?page=``: its offset (page × page size) stays far inside PostgreSQL's
#: bigint, and no list comes near it; beyond → 422 naming ``page``
MAX_PAGE = 1_000_000_000


class PageParams(BaseModel):
    """``?page=`` (1-based, ≤ 10⁹) and ``?page_size=`` (default 50, max 500)."""

    page: int = 1
    page_size: int = 50


def page_params(
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1, page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50
) -> PageParams:
    """The page query parameters (422 when out of their bounds)."""
    return PageParams(page=page, page_size=page_size)


def paginate(request: Request, conn: Connection, stmt: Select[Any], params: PageParams, serialize: Any) -> dict[str, Any]:
    """Run ``stmt`` for one page and wrap it DRF-style with absolute next/previous links."""
    count = conn.execute(select(func.count()).select_from(stmt.order_by(None).subquery())).scalar_one()
    rows = conn.execute(stmt.limit(params.page_size).offset((params.page - 1) * params.page_size)).mappings().all()

    def link(page: int) -> str:
        return str(request.url.include_query_params(page=page, page_size=params.page_size))

    return {
        "count": count,
        "next": link(params.page + 1) if params.page * params.page_size < count else None,
        "previous": link(params.page - 1) if params.page > 1 else None,
        "results": [serialize(dict(r)) for r in rows],
    }
