"""DRF's list filters over the read models: ``?search=`` (``SearchFilter``) and
``?ordering=`` (``OrderingFilter``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, or_

#: DRF's search splitting: quoted phrases stay whole, other tokens split on spaces and commas
_TOKEN = re.compile(r"""((?:[^\s'"]*(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')[^\s'"]*)+|\S+)""")
MAX_SEARCH_TERMS = 20  # more terms than this are ignored (each adds an OR of ILIKEs)


def search_terms(search: str) -> list[str]:
    """The terms of a DRF ``?search=``: NUL characters dropped; quoted phrases (``"a b"``)
    kept whole, unquoted tokens split on white space and commas; empty terms dropped."""
    terms: list[str] = []
    for token in _TOKEN.findall(search.replace("\x00", "")):
        token = token.strip(",")
        if len(token) >= 2 and token[0] in "\"'" and token[-1] == token[0]:
            phrase = re.sub(r"\\(.)", r"\1", token[1:-1])
            if phrase:
                terms.append(phrase)
        else:
            terms.extend(part.strip() for part in token.split(",") if part.strip())
    return terms[:MAX_SEARCH_TERMS]


def escape_like(term: str) -> str:
    """``term`` with LIKE's ``%``, ``_`` and the escape character ``\\`` taken literally."""
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_filter(search: str | None, columns: Sequence[Any]) -> ColumnElement[bool] | None:
    """DRF's ``SearchFilter``: every term of ``search`` must occur (case-insensitively, as a
    literal substring) in at least one of ``columns``. None when there is no term."""
    terms = search_terms(search or "")
    if not terms:
        return None
    return and_(*(or_(*(col.ilike(f"%{escape_like(term)}%", escape="\\") for col in columns), false()) for term in terms))


def order_by(stmt: Select[Any], ordering: str | None, fields: Mapping[str, Any], default: str, tiebreak: Any) -> Select[Any]:
    """DRF's ``OrderingFilter``: ``ordering`` is a comma-separated list of ``fields`` keys,
    each optionally prefixed with ``-`` (descending); unknown fields are ignored, and when
    none is left the ``default`` applies. ``tiebreak`` (a unique column) keeps pages stable.
    Nulls come last in either direction."""

    def terms(text: str) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        for raw in text.split(","):
            term = raw.strip()
            name = term.removeprefix("-")
            if name in fields and name not in (n for n, _ in out):
                out.append((name, term.startswith("-")))
        return out

    chosen = terms(ordering or "") or terms(default)
    clauses = [(fields[n].desc() if desc else fields[n].asc()).nulls_last() for n, desc in chosen]
    return stmt.order_by(*clauses, tiebreak)


__all__ = ["MAX_SEARCH_TERMS", "escape_like", "order_by", "search_filter", "search_terms"]
