"""The read side's sanitizer: strings PostgreSQL cannot store become U+FFFD, nothing else
changes, and unchanged values stay the same objects."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from commands.context import SYSTEM, Context, acting_as
from commands.project import Project
from projections.failures import describe, is_transient
from projections.sanitize import REPLACEMENT, clean_text, sanitize, sanitize_event


def test_nul_and_lone_surrogates_become_the_replacement_character() -> None:
    assert clean_text("a\x00b\x00") == f"a{REPLACEMENT}b{REPLACEMENT}"
    assert clean_text("x\ud800y\udfff") == f"x{REPLACEMENT}y{REPLACEMENT}"
    assert clean_text("tab\tnew\nline é 🎬 \x01") == "tab\tnew\nline é 🎬 \x01"


def test_clean_values_are_returned_as_they_are() -> None:
    value = {"name": "ok", "list": [1, "two", {"three": None}], "t": (1.5, "x"), "id": uuid.uuid4()}
    assert sanitize(value) is value
    text = "plain"
    assert clean_text(text) is text


def test_strings_are_cleaned_recursively_keys_too() -> None:
    when = datetime.now(UTC)
    value = {"k\x00": ["a\x00", {"deep\x00": ("x\x00", 3)}], "same": "ok", "when": when, "n": None}
    assert sanitize(value) == {
        f"k{REPLACEMENT}": [f"a{REPLACEMENT}", {f"deep{REPLACEMENT}": (f"x{REPLACEMENT}", 3)}],
        "same": "ok",
        "when": when,
        "n": None,
    }
    assert value["k\x00"] == ["a\x00", {"deep\x00": ("x\x00", 3)}], "the input is not changed"


def test_an_event_is_copied_with_clean_fields_and_the_stored_one_is_untouched() -> None:
    with acting_as(Context(SYSTEM, "unit")):
        project = Project(name="evil\x00name", description="fine", owner_id="u1")
        project.update({"description": "d\x00"})
    created, updated = project.collect_events()
    clean = sanitize_event(created)
    assert clean is not created
    assert clean.name == f"evil{REPLACEMENT}name"  # type: ignore[attr-defined]
    assert clean.description == "fine"  # type: ignore[attr-defined]
    assert clean.originator_id == created.originator_id and clean.timestamp == created.timestamp
    assert created.name == "evil\x00name"  # type: ignore[attr-defined]
    assert sanitize_event(updated).changes == {"description": f"d{REPLACEMENT}"}  # type: ignore[attr-defined]
    with acting_as(Context(SYSTEM, "unit")):
        plain = Project(name="plain", description="", owner_id="u1").collect_events()[0]
    assert sanitize_event(plain) is plain


def test_errors_are_described_without_statement_or_parameters() -> None:
    from sqlalchemy.exc import DataError, OperationalError

    class FakeDataError(Exception):
        sqlstate = "22P05"

    class FakeDeadlock(Exception):
        sqlstate = "40P01"

    err = DataError("INSERT INTO rm_users (password_hash) VALUES (%s)", {"password_hash": "secret"}, FakeDataError("bad\x00"))
    text = describe(err)
    assert text == f"FakeDataError: bad{REPLACEMENT}"
    assert "secret" not in text and "INSERT" not in text
    assert len(describe(ValueError("x" * 10_000))) <= 2000
    assert not is_transient(err)
    assert is_transient(OperationalError("SELECT 1", {}, FakeDeadlock("deadlock detected")))
    assert not is_transient(KeyError("at"))
