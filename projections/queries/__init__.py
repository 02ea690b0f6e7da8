"""Read-side queries over the read models, shared by the API, the processors' composition
and the CLI: filters (:mod:`.filters`), visibility (:mod:`.visibility`), jobs, results and
pending work (:mod:`.jobs`), settings (:mod:`.settings`)."""

from __future__ import annotations

from projections.queries.filters import MAX_SEARCH_TERMS, escape_like, order_by, search_filter, search_terms
from projections.queries.jobs import (
    WorkRef,
    first_log_lines,
    job_by_id,
    oldest_pending_job,
    open_job_ids,
    priority_rank,
    result_of_job,
    running_jobs,
)
from projections.queries.settings import effective_settings
from projections.queries.visibility import Viewer, visible_agents, visible_jobs, visible_projects

__all__ = [
    "MAX_SEARCH_TERMS",
    "Viewer",
    "WorkRef",
    "effective_settings",
    "escape_like",
    "first_log_lines",
    "job_by_id",
    "oldest_pending_job",
    "open_job_ids",
    "order_by",
    "priority_rank",
    "result_of_job",
    "running_jobs",
    "search_filter",
    "search_terms",
    "visible_agents",
    "visible_jobs",
    "visible_projects",
]
