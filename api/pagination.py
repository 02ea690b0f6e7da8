"""DRF-style page-number pagination: ``{count, next, previous, results}``, as DRF's
``PageNumberPagination`` answers it:

- ``?page_size=`` above :data:`MAX_PAGE_SIZE` is capped; 0, a negative number or a
  non-number falls back to :data:`DEFAULT_PAGE_SIZE`;
- ``?page=`` is 1-based, ``last`` names the last page; a page that is not a positive
  integer or lies past the end → 404 ``Invalid page.`` (page 1 of an empty list is empty);
- ``next`` and ``previous`` are absolute links (see :mod:`api.urls`) to this list with the
  page replaced (``previous`` of page 2 drops ``page``, as DRF does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import Query, Request
from pydantic import BaseModel
from sqlalchemy import Connection, Select, func, select

from api.urls import absolute_url
from commands.errors import NotFound

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
LAST_PAGE = "last"
INVALID_PAGE = "Invalid page."


class PageParams(BaseModel):
    """``?page=`` (1-based, or ``last``) and ``?page_size=`` (default 50, capped at 500)."""

    page: int | str = 1
    page_size: int = DEFAULT_PAGE_SIZE


def _page_size(text: str | None) -> int:
    """DRF's ``get_page_size``: a positive integer, capped; anything else → the default."""
    try:
        size = int((text or "").strip())
    except ValueError:
        return DEFAULT_PAGE_SIZE
    return min(size, MAX_PAGE_SIZE) if size > 0 else DEFAULT_PAGE_SIZE


def page_params(
    page: Annotated[
        str | None,
        Query(
            description="1-based page number, or `last`; past the end → 404",
            json_schema_extra={"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "enum": [LAST_PAGE]}]},
        ),
    ] = None,
    page_size: Annotated[
        str | None,
        Query(
            description=f"items per page (default {DEFAULT_PAGE_SIZE}, capped at {MAX_PAGE_SIZE}; 0 or invalid → default)",
            json_schema_extra={"anyOf": [{"type": "integer"}, {"type": "string"}]},
        ),
    ] = None,
) -> PageParams:
    """The page query parameters, read as DRF reads them (the page is checked once the
    count is known, by :func:`page_window`). A number of more than 18 digits is no page
    (404 there), so no offset can pass PostgreSQL's bigint."""
    number: int | str = 1
    if page is not None and page.strip():
        text = page.strip()
        number = (
            LAST_PAGE if text == LAST_PAGE else (int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else text)
        )
    return PageParams(page=number, page_size=_page_size(page_size))


def page_window(params: PageParams, count: int) -> int:
    """The page number of ``params`` for a list of ``count`` items. Raises NotFound
    (``Invalid page.``) for a page that is not a positive integer or lies past the end."""
    pages = max(1, math.ceil(count / params.page_size))
    if params.page == LAST_PAGE:
        return pages
    if not isinstance(params.page, int) or not 1 <= params.page <= pages:
        raise NotFound(INVALID_PAGE)
    return params.page


def envelope(request: Request, number: int, params: PageParams, count: int, results: list[Any]) -> dict[str, Any]:
    """``{count, next, previous, results}`` for page ``number``."""
    url = absolute_url(request)

    def link(n: int) -> str:
        if n == 1:
            return str(url.remove_query_params("page").include_query_params(page_size=params.page_size))
        return str(url.include_query_params(page=n, page_size=params.page_size))

    return {
        "count": count,
        "next": link(number + 1) if number * params.page_size < count else None,
        "previous": link(number - 1) if number > 1 else None,
        "results": results,
    }


def paginate(
    request: Request, conn: Connection, stmt: Select[Any], params: PageParams, serialize: Callable[[dict[str, Any]], Any]
) -> dict[str, Any]:
    """Run ``stmt`` for one page and wrap it DRF-style with absolute next/previous links."""
    count = conn.execute(select(func.count()).select_from(stmt.order_by(None).subquery())).scalar_one()
    number = page_window(params, count)
    rows = conn.execute(stmt.limit(params.page_size).offset((number - 1) * params.page_size)).mappings().all()
    return envelope(request, number, params, count, [serialize(dict(r)) for r in rows])


def paginate_list(request: Request, items: Sequence[Any], params: PageParams) -> dict[str, Any]:
    """One page of an in-memory list, wrapped like :func:`paginate`."""
    number = page_window(params, len(items))
    start = (number - 1) * params.page_size
    return envelope(request, number, params, len(items), list(items[start : start + params.page_size]))
