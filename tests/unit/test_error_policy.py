"""The consumer's per-record error policy, without a broker: which errors are transient
(retried) and which poison (dead-lettered at once), the work-message check, the excerpt,
and what the policy does with a failing record."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import sqlalchemy.exc
from eventsourcing import persistence

from commands.errors import Conflict, InvalidCommand
from processors.error_policy import (
    EXCERPT_BYTES,
    ErrorPolicy,
    InvalidMessage,
    RecordErrors,
    Verdict,
    excerpt,
    is_poison,
    is_transient,
)
from processors.work_messages import InvalidWorkMessage, parse_work_message


def outage() -> Exception:
    """What the store raises while PostgreSQL is down (eventsourcing's wrapping)."""
    try:
        try:
            raise psycopg.OperationalError("connection refused")
        except psycopg.OperationalError as exc:
            raise persistence.OperationalError(str(exc)) from exc
    except persistence.OperationalError as wrapped:
        return wrapped


@pytest.mark.parametrize(
    "exc",
    [
        outage(),
        persistence.InterfaceError("closed"),
        psycopg.OperationalError("server closed the connection"),
        sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("down")),
        sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError("timed out"),
    ],
)
def test_an_unreachable_store_or_network_is_transient_and_retried(exc: Exception) -> None:
    assert is_transient(exc) and not is_poison(exc)
    assert all(ErrorPolicy().decide(exc, n) is Verdict.RETRY for n in (1, 10, 1000))  # never skipped


def test_a_value_error_raised_from_an_outage_is_transient() -> None:
    exc = ValueError("could not load the job")
    exc.__cause__ = outage()  # as ``raise ... from`` leaves it
    assert is_transient(exc) and ErrorPolicy().decide(exc, 1) is Verdict.RETRY


def test_a_disconnect_sqlalchemy_flags_is_transient() -> None:
    err = sqlalchemy.exc.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert is_transient(err)
    assert not is_transient(sqlalchemy.exc.DBAPIError("SELECT 1", {}, Exception("syntax")))


@pytest.mark.parametrize(
    "exc",
    [
        InvalidWorkMessage("not UTF-8 JSON"),
        InvalidCommand("bad"),
        Conflict("refused"),
        ValueError("badly formed hexadecimal UUID string"),
        KeyError("job_id"),
        TypeError("unhashable"),
        AttributeError("'list' object has no attribute 'get'"),
    ],
)
def test_errors_of_the_record_itself_are_poison_and_dead_lettered_at_once(exc: Exception) -> None:
    assert is_poison(exc) and not is_transient(exc)
    assert ErrorPolicy().decide(exc, 1) is Verdict.DEAD_LETTER


def test_other_errors_are_retried_a_bounded_number_of_deliveries() -> None:
    policy, exc = ErrorPolicy(max_attempts=3), RuntimeError("engine crashed oddly")
    assert [policy.decide(exc, n) for n in (1, 2, 3, 4)] == [
        Verdict.RETRY,
        Verdict.RETRY,
        Verdict.DEAD_LETTER,
        Verdict.DEAD_LETTER,
    ]


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = ErrorPolicy(backoff_s=0.5, backoff_cap_s=3.0)
    assert [policy.delay_s(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


# -- the work message ------------------------------------------------------------------------


def test_a_work_message_is_checked_before_anything_acts_on_it() -> None:
    job_id = str(uuid.uuid4())
    good = {"job_id": job_id, "type": "tts", "version": 3, "position": 9, "priority": "high"}
    assert parse_work_message(json.dumps(good).encode(), {"tts"}) == good
    assert parse_work_message(good, {"tts"}) == good
    refused = [
        b"\xff\xfe garbage",
        b"{not json",
        b"[1, 2]",
        b"null",
        json.dumps({**good, "job_id": "not-a-uuid"}).encode(),
        json.dumps({"aggregate_id": job_id, "type": "JobSubmitted"}).encode(),  # an event envelope
        json.dumps({**good, "type": "stt"}).encode(),  # not served here
        json.dumps({**good, "version": "3"}).encode(),
        json.dumps({**good, "position": True}).encode(),
        json.dumps({**good, "priority": 1}).encode(),
    ]
    for value in refused:
        with pytest.raises(InvalidWorkMessage):
            parse_work_message(value, {"tts"})


def test_the_excerpt_is_bounded_to_one_kib() -> None:
    assert excerpt(b"x" * 5000) == b"x" * EXCERPT_BYTES
    assert excerpt("é" * 2000) == ("é" * 512).encode()
    assert excerpt(None) == b""
    assert excerpt({"a": 1}) == b"{'a': 1}"


# -- the policy at work -----------------------------------------------------------------------


@dataclass
class Record:
    value: Any
    topic: str = "t.work.tts"
    partition: int = 0
    offset: int = 7


class Log:
    def __init__(self, down: int = 0) -> None:
        self.rows: list[InvalidMessage] = []
        self.down = down  # failures before it accepts

    def record(self, message: InvalidMessage) -> None:
        if self.down:
            self.down -= 1
            raise outage()
        self.rows.append(message)


def counted(errors: RecordErrors) -> dict[str, float]:
    return {s.labels["topic"]: s.value for m in errors.counter.collect() for s in m.samples if s.name.endswith("_total")}


def test_a_poison_record_is_logged_with_its_place_recorded_counted_and_committed(caplog: Any) -> None:
    log, waits = Log(), list[float]()
    errors = RecordErrors(ErrorPolicy(), log, "proc-1")
    with caplog.at_level(logging.ERROR, logger="processors.error_policy"):
        assert errors.on_processing_error(Record(b"\x00junk"), InvalidWorkMessage("not UTF-8 JSON"), waits.append) is True
    assert "topic=t.work.tts partition=0 offset=7" in caplog.text
    assert [(r.topic, r.partition, r.offset, r.excerpt) for r in log.rows] == [("t.work.tts", 0, 7, b"\x00junk")]
    assert log.rows[0].error == "InvalidWorkMessage: not UTF-8 JSON"
    assert counted(errors) == {"t.work.tts": 1.0} and waits == []


def test_an_outage_is_retried_with_backoff_and_a_dead_letter_waits_for_the_store() -> None:
    log, waits = Log(down=1), list[float]()
    errors = RecordErrors(ErrorPolicy(backoff_s=0.5), log, "proc-1")
    assert errors.on_processing_error(Record(b"{}"), outage(), waits.append) is False  # not committed
    assert errors.on_processing_error(Record(b"{}"), outage(), waits.append) is False
    assert waits == [0.5, 1.0] and log.rows == []
    assert errors.on_processing_error(Record(b"x"), InvalidWorkMessage("bad"), waits.append) is False  # store down
    assert errors.on_processing_error(Record(b"x"), InvalidWorkMessage("bad"), waits.append) is True
    assert len(log.rows) == 1 and counted(errors) == {"t.work.tts": 1.0}


def test_deliveries_are_counted_per_record_and_reset_on_success() -> None:
    errors, waits = RecordErrors(ErrorPolicy(max_attempts=2), None, "proc-1"), list[float]()
    odd = RuntimeError("odd")
    assert errors.on_processing_error(Record(b"{}", offset=1), odd, waits.append) is False
    assert errors.on_processing_error(Record(b"{}", offset=2), odd, waits.append) is False  # another record: first delivery
    assert errors.on_processing_error(Record(b"{}", offset=2), odd, waits.append) is True  # its second: dead-lettered
    errors.succeeded()
    assert errors.on_processing_error(Record(b"{}", offset=2), odd, waits.append) is False
