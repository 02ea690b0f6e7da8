"""User command handlers in memory (eventsourcing's POPO store): who may create, change,
deactivate and reactivate users; what is refused and how."""

from __future__ import annotations

import uuid

import pytest

from commands.context import SYSTEM, Actor, Context
from commands.errors import Conflict, Forbidden, InvalidCommand, NotFound
from commands.messages import ChangePassword, CreateUser, DeactivateUser, ReactivateUser, UpdateUser
from commands.service import Platform

ADMIN = Context(SYSTEM, "req-admin")


@pytest.fixture
def platform() -> Platform:
    return Platform({"PERSISTENCE_MODULE": "eventsourcing.popo"})


def signed_in(platform: Platform, name: str, role: str = "editor") -> Context:
    user_id, _ = platform.create_user(CreateUser(name, "password-123", role), ADMIN)
    return Context(Actor(str(user_id), name, role), f"req-{name}")


def test_admins_create_users_and_a_taken_name_conflicts(platform: Platform) -> None:
    user_id, position = platform.create_user(CreateUser("alice", "password-123", "editor", "a@example.com"), ADMIN)
    assert position == platform.head() == 1
    assert platform.user_exists("alice") and user_id is not None
    with pytest.raises(Conflict, match="a user named 'alice' exists"):
        platform.create_user(CreateUser("alice", "password-456", "viewer"), ADMIN)
    assert platform.head() == 1


def test_editors_may_not_create_users_and_bad_input_names_its_field(platform: Platform) -> None:
    alice = signed_in(platform, "alice")
    with pytest.raises(Forbidden):
        platform.create_user(CreateUser("bob", "password-123", "editor"), alice)
    with pytest.raises(InvalidCommand) as info:
        platform.create_user(CreateUser("bob", "short", "editor"), ADMIN)
    assert [f.path for f in info.value.fields] == [("password",)]
    with pytest.raises(InvalidCommand) as info:
        platform.create_user(CreateUser("bob", "password-123", "owner"), ADMIN)
    assert info.value.fields[0].path == ("role",)


def test_a_user_changes_their_own_email_but_not_their_role_nor_others(platform: Platform) -> None:
    alice, bob = signed_in(platform, "alice"), signed_in(platform, "bob")
    me = uuid.UUID(alice.actor.id)
    before = platform.head()
    assert platform.update_user(UpdateUser(me, email="alice@example.com"), alice) == before + 1
    with pytest.raises(Forbidden, match="only admins change roles"):
        platform.update_user(UpdateUser(me, role="admin"), alice)
    with pytest.raises(NotFound):  # another's profile is not visible to an editor
        platform.update_user(UpdateUser(uuid.UUID(bob.actor.id), email="x@example.com"), alice)
    with pytest.raises(NotFound):  # nor is a user that does not exist, to an admin
        platform.update_user(UpdateUser(uuid.uuid4(), email="x@example.com"), ADMIN)


def test_an_unchanged_update_stores_nothing_and_answers_the_head(platform: Platform) -> None:
    alice = signed_in(platform, "alice")
    head = platform.head()
    assert platform.update_user(UpdateUser(uuid.UUID(alice.actor.id)), alice) == head
    assert platform.head() == head


def test_deactivation_is_admins_never_oneself_and_not_twice(platform: Platform) -> None:
    alice = signed_in(platform, "alice")
    alice_id = uuid.UUID(alice.actor.id)
    with pytest.raises(Forbidden):
        platform.deactivate_user(DeactivateUser(alice_id), alice)
    admin = signed_in(platform, "root", "admin")
    with pytest.raises(Conflict, match="yourself"):
        platform.deactivate_user(DeactivateUser(uuid.UUID(admin.actor.id)), admin)
    platform.deactivate_user(DeactivateUser(alice_id), admin)
    with pytest.raises(Conflict, match="already inactive"):
        platform.deactivate_user(DeactivateUser(alice_id), admin)
    platform.reactivate_user(ReactivateUser(alice_id), admin)
    with pytest.raises(Conflict, match="already active"):
        platform.reactivate_user(ReactivateUser(alice_id), admin)
    with pytest.raises(NotFound):
        platform.deactivate_user(DeactivateUser(uuid.uuid4()), admin)


def test_a_wrong_old_password_is_refused_naming_the_field(platform: Platform) -> None:
    alice = signed_in(platform, "alice")
    with pytest.raises(InvalidCommand) as info:
        platform.change_password(ChangePassword("not-it-at-all", "new-password-1"), alice)
    assert info.value.fields[0].path == ("old_password",)
    platform.change_password(ChangePassword("password-123", "new-password-1"), alice)


def test_user_management_is_admins_even_for_ones_own_email(platform: Platform) -> None:
    alice = signed_in(platform, "alice")
    me = uuid.UUID(alice.actor.id)
    with pytest.raises(Forbidden, match="user management"):
        platform.update_user(UpdateUser(me, email="alice@example.com", management=True), alice)
    platform.update_user(UpdateUser(me, email="alice@example.com", management=True), ADMIN)
