"""The users and projects read models' rows: given these events, this row (no database)."""

from __future__ import annotations

import pytest

from events import (
    JobArchived,
    JobProgressed,
    JobSubmitted,
    ProjectArchived,
    ProjectCreated,
    ProjectUpdated,
    UserCreated,
    UserDeactivated,
    UserLoggedOut,
    UserPasswordChanged,
    UserReactivated,
    UserUpdated,
)
from projections.readmodels.projects import jobs_count_delta, project_row
from projections.readmodels.users import revoked_session, user_row
from tests.unit.readmodel_events import at, make


def created_user() -> dict[str, object]:
    return user_row(None, make(UserCreated, 1, username="bob", role="viewer", email="b@x.org", password_hash="h1"), 5)


def test_a_new_user_is_active() -> None:
    row = created_user()
    assert row["username"] == "bob" and row["role"] == "viewer" and row["email"] == "b@x.org"
    assert row["is_active"] is True and row["password_hash"] == "h1"
    assert row["created_at"] == row["updated_at"] == at(1) and row["position"] == 5


def test_an_update_changes_only_email_and_role() -> None:
    row = user_row(created_user(), make(UserUpdated, 2, changes={"role": "editor", "username": "eve"}), 6)
    assert row["role"] == "editor" and row["username"] == "bob" and row["position"] == 6 and row["updated_at"] == at(2)


def test_deactivation_and_reactivation_revoke_tokens_on_return() -> None:
    off = user_row(created_user(), make(UserDeactivated, 2), 6)
    assert off["is_active"] is False and "tokens_valid_after" not in off
    on = user_row(off, make(UserReactivated, 3), 7)
    assert on["is_active"] is True and on["tokens_valid_after"] == at(3) and on["kept_session"] is None


def test_a_password_change_keeps_one_session() -> None:
    row = user_row(created_user(), make(UserPasswordChanged, 2, password_hash="h2", kept_session="s-1"), 6)
    assert row["password_hash"] == "h2" and row["tokens_valid_after"] == at(2) and row["kept_session"] == "s-1"


def test_a_replayed_event_leaves_the_user_row_as_it_is() -> None:
    row = user_row(created_user(), make(UserDeactivated, 2), 6)
    assert user_row(row, make(UserDeactivated, 2), 6) is row
    again = make(UserCreated, 1, username="bob", role="admin", email=None, password_hash="h")
    assert user_row(row, again, 5) is row  # a second creation is ignored, as the insert is


def test_a_user_change_before_creation_is_refused() -> None:
    with pytest.raises(ValueError):
        user_row(None, make(UserDeactivated, 2), 6)


def test_a_logout_revokes_its_session() -> None:
    row = revoked_session(make(UserLoggedOut, 4, session="s-9"))
    assert row == {"session": "s-9", "user_id": str(make(UserLoggedOut, 4, session="s").originator_id), "revoked_at": at(4)}


def created_project(owner: str | None = "carol") -> dict[str, object]:
    return project_row(None, make(ProjectCreated, 1, name="P", description="d", owner_id="u-1"), 3, owner)


def test_a_new_project_has_no_jobs_and_its_owners_name() -> None:
    row = created_project()
    assert row["name"] == "P" and row["owner_username"] == "carol" and row["jobs_count"] == 0 and row["archived"] is False


def test_a_project_owner_unknown_to_the_users_read_model_is_named_by_the_actor() -> None:
    assert created_project(None)["owner_username"] == "alice"


def test_project_updates_and_archive() -> None:
    row = project_row(created_project(), make(ProjectUpdated, 2, changes={"name": "Q"}), 4)
    assert row["name"] == "Q" and row["position"] == 4
    assert project_row(row, make(ProjectArchived, 3), 8)["archived"] is True


def test_jobs_count_moves_with_submissions_and_archives_only() -> None:
    assert jobs_count_delta(make(JobArchived, 3)) == -1
    assert jobs_count_delta(make(JobProgressed, 3, progress=1, stage="s")) == 0
    submitted = make(
        JobSubmitted,
        1,
        project_id="p",
        owner_id="u",
        type="tts",
        parameters={},
        input_files={},
        priority="low",
        agent_id=None,
        idempotency_key=None,
        request_hash=None,
    )
    assert jobs_count_delta(submitted) == 1
