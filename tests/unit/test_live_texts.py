"""Serialised live messages shared between connections (api.live.MessageTexts, text_key):
a user's job-feed connections share a position's text, admins on the events feed share an
envelope's, nobody shares another user's, and the oldest texts go first."""

from __future__ import annotations

from api.live import Feed, MessageTexts, text_key

ALICE = {"id": "alice-id", "role": "editor"}
BOB = {"id": "bob-id", "role": "editor"}
ROOT = {"id": "root-id", "role": "admin"}


def test_job_feed_messages_are_shared_per_user_and_position() -> None:
    message = {"type": "job_progress", "position": 7, "job_id": "j", "job": {"id": "j"}}
    one_job, all_jobs = Feed("job", ALICE, "j"), Feed("jobs", ALICE)
    assert text_key(one_job, message) == text_key(all_jobs, message) == ("job", "alice-id", 7)
    assert text_key(Feed("jobs", BOB), message) != text_key(all_jobs, message)  # URLs are signed per user
    assert text_key(all_jobs, {**message, "position": 8}) != text_key(all_jobs, message)


def test_events_feed_messages_are_shared_per_position_and_history_is_not_shared() -> None:
    assert text_key(Feed("events", ROOT), {"position": 3}) == text_key(Feed("events", {"id": "other-admin"}), {"position": 3})
    assert text_key(Feed("history", ALICE, "j"), {"position": 3}) is None


def test_texts_keep_the_latest_size_entries() -> None:
    texts = MessageTexts(size=2)
    texts.put(("events", 1), "one")
    texts.put(("events", 2), "two")
    assert texts.get(("events", 1)) == "one"
    texts.put(("events", 3), "three")
    assert texts.get(("events", 1)) is None
    assert (texts.get(("events", 2)), texts.get(("events", 3))) == ("two", "three")
