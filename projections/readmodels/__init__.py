"""One projection per read model, each declaring the events it handles, and
:class:`ReadModels`, which applies an event to every read model that handles it (the
projector's unit of work: all of them in its one transaction per batch)."""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace

from sqlalchemy import Connection

from events import DomainEvent
from projections.readmodels.agents import AgentsProjection
from projections.readmodels.base import ReadModel
from projections.readmodels.dead_letters import DeadLettersProjection
from projections.readmodels.job_row import JobRow, fold_job, job_row
from projections.readmodels.jobs import JobsProjection
from projections.readmodels.logs import LogsProjection
from projections.readmodels.projects import ProjectsProjection
from projections.readmodels.providers import ProvidersProjection
from projections.readmodels.results import ResultsProjection
from projections.readmodels.settings import SettingsProjection
from projections.readmodels.users import SessionsProjection, UsersProjection
from projections.readmodels.webhook_endpoints import WebhookEndpointsProjection

#: Every read model, in the order an event is applied to them: the projects read model
#: counts a submitted job before the jobs read model inserts its row.
ALL: tuple[type[ReadModel], ...] = (
    UsersProjection,
    SessionsProjection,
    ProjectsProjection,
    JobsProjection,
    ResultsProjection,
    LogsProjection,
    DeadLettersProjection,
    SettingsProjection,
    AgentsProjection,
    ProvidersProjection,
    WebhookEndpointsProjection,
)


class ReadModels:
    """The read models of one generation (``tables``, :func:`projections.tables.generation`),
    applying each event to those whose ``handles`` include its class."""

    def __init__(self, tables: SimpleNamespace, models: tuple[type[ReadModel], ...] = ALL) -> None:
        self.t = tables
        self.models = [model(tables) for model in models]
        self._routes: dict[type, list[ReadModel]] = {}

    def handling(self, event_class: type) -> list[ReadModel]:
        """The read models that apply events of ``event_class``, in order."""
        route = self._routes.get(event_class)
        if route is None:
            route = self._routes[event_class] = [m for m in self.models if issubclass(event_class, m.handles)]
        return route

    def apply(self, event: DomainEvent, conn: Connection, position: int) -> None:
        """Apply ``event`` (stored at ``position``) to every read model that handles it, in
        ``conn``'s transaction; events none handles are skipped."""
        for model in self.handling(type(event)):
            if model.reads_jobs:
                self._flush_jobs_of(event, conn)
            model.process_event(event, conn, position)

    def apply_batch(self, entries: Iterable[tuple[DomainEvent, int]], conn: Connection) -> None:
        """Apply ``(event, position)`` pairs in order, letting read models merge a batch's
        writes (e.g. one write per job row, one insert of all log lines) and write them
        before returning. On an error nothing buffered is written and it is raised."""
        for model in self.models:
            model.begin_batch()
        try:
            for event, position in entries:
                self.apply(event, conn, position)
            for model in self.models:
                model.end_batch(conn)
        except BaseException:
            for model in self.models:
                model.end_batch(None)
            raise

    def _flush_jobs_of(self, event: DomainEvent, conn: Connection) -> None:
        for model in self.models:
            if model.buffers(event):
                model.flush(conn)


__all__ = ["ALL", "JobRow", "ReadModel", "ReadModels", "fold_job", "job_row"]
