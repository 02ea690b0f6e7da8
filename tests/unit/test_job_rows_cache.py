"""The live feed's and the dispatcher's "job as of this event" (projections.history.JobRows):
folded forward in memory from the row it remembers, from the store only when it must."""

from __future__ import annotations

from typing import Any

import pytest

from events import JobProgressed, JobStarted
from projections.history import JobRows
from projections.readmodels.job_row import JobRow, job_row
from tests.unit.readmodel_events import make
from tests.unit.test_job_row import pending, submitted


class CountingStore:
    """A store-history reader that answers from a list of events and counts its reads."""

    def __init__(self, events: list[Any]) -> None:
        self.events, self.reads = events, 0

    def job_at(self, job_id: Any, version: int) -> JobRow:
        self.reads += 1
        row: JobRow | None = None
        for position, event in enumerate(self.events[:version], start=10):
            row = job_row(row, event, position)
        assert row is not None
        return row


def events() -> list[Any]:
    return [
        submitted(),
        make(JobStarted, 2, processor_id="proc-1", attempt=1),
        *(make(JobProgressed, v, progress=v * 10, stage=f"step {v}") for v in range(3, 8)),
    ]


def test_a_kept_row_is_moved_forward_without_reading_the_store() -> None:
    evs = events()
    store = CountingStore(evs)
    rows = JobRows(store)  # type: ignore[arg-type]
    rows.keep(JobRow.of(store.job_at(None, 2).as_dict()))  # the read model's row at version 2
    store.reads = 0
    got = [rows.after(e, 10 + i) for i, e in enumerate(evs[2:], start=2)]
    assert store.reads == 0
    assert [(r.version, r.progress, r.stage) for r in got] == [(v, v * 10, f"step {v}") for v in range(3, 8)]
    assert got[-1] == store.job_at(None, 7)  # the same row the store's fold gives


def test_a_gap_is_folded_from_the_store_once_then_moved_forward() -> None:
    evs = events()
    store = CountingStore(evs)
    rows = JobRows(store)  # type: ignore[arg-type]
    rows.keep(pending())  # version 1; the next event seen is version 4
    assert rows.after(evs[3], 13).version == 4 and store.reads == 1
    assert rows.after(evs[4], 14).progress == 50 and store.reads == 1


def test_of_reads_a_read_model_mapping_and_refuses_a_partial_one() -> None:
    row = pending()
    assert JobRow.of(row.as_dict()) == row
    partial = row.as_dict()
    del partial["stage"]
    with pytest.raises(KeyError, match="stage"):
        JobRow.of(partial)
