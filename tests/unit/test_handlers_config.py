"""Settings, agent and provider command handlers in memory (eventsourcing's POPO store)."""

from __future__ import annotations

import uuid

import pytest

from commands.context import SYSTEM, Actor, Context
from commands.errors import Conflict, Forbidden, InvalidCommand, NotFound
from commands.messages import (
    ChangeSetting,
    CreateAgent,
    CreateProvider,
    CreateUser,
    DeleteAgent,
    DeleteProvider,
    DeleteSetting,
    SetAgentStatus,
    SetSetting,
    UpdateAgent,
    UpdateProvider,
)
from commands.service import Platform, Policies

ADMIN = Context(SYSTEM, "req-admin")
VIEWER = Context(Actor("vera-id", "vera", "viewer"), "req-vera")


@pytest.fixture
def platform() -> Platform:
    policies = Policies(encrypt=lambda text: f"sealed:{text[::-1]}", decrypt=lambda token: token[7:][::-1])
    return Platform({"PERSISTENCE_MODULE": "eventsourcing.popo"}, policies=policies)


def signed_in(platform: Platform, name: str, role: str = "editor") -> Context:
    user_id, _ = platform.create_user(CreateUser(name, "password-123", role), ADMIN)
    return Context(Actor(str(user_id), name, role), f"req-{name}")


def test_global_settings_are_admins_and_a_users_own_are_theirs(platform: Platform) -> None:
    alice, bob = signed_in(platform, "alice"), signed_in(platform, "bob")
    with pytest.raises(Forbidden):
        platform.set_setting(SetSetting("default_language", "es"), alice)
    setting_id, _ = platform.set_setting(SetSetting("default_language", "es", alice.actor.id), alice)
    with pytest.raises(NotFound):  # bob may not even see alice's settings
        platform.change_setting(ChangeSetting(setting_id, "fr"), bob)
    with pytest.raises(NotFound):
        platform.delete_setting(DeleteSetting(setting_id), bob)
    platform.change_setting(ChangeSetting(setting_id, "fr"), alice)
    platform.delete_setting(DeleteSetting(setting_id), alice)
    with pytest.raises(NotFound):
        platform.delete_setting(DeleteSetting(setting_id), alice)


def test_setting_the_same_value_again_is_idempotent(platform: Platform) -> None:
    setting_id, first = platform.set_setting(SetSetting("default_language", "es"), ADMIN)
    again_id, again = platform.set_setting(SetSetting("default_language", "es"), ADMIN)
    assert again_id == setting_id and again == first == platform.head()


def test_a_users_quota_is_an_admins_to_set(platform: Platform) -> None:
    alice = signed_in(platform, "alice")
    with pytest.raises(Forbidden, match="only admins set a user's max_concurrent_jobs"):
        platform.set_setting(SetSetting("max_concurrent_jobs", 9, alice.actor.id), alice)
    setting_id, _ = platform.set_setting(SetSetting("max_concurrent_jobs", 2, alice.actor.id), ADMIN)
    with pytest.raises(Forbidden):
        platform.change_setting(ChangeSetting(setting_id, 9), alice)


def test_agents_belong_to_their_owner(platform: Platform) -> None:
    alice, bob = signed_in(platform, "alice"), signed_in(platform, "bob")
    with pytest.raises(Forbidden):
        platform.create_agent(CreateAgent("n", "tts", {}), VIEWER)
    agent_id, _ = platform.create_agent(CreateAgent("narrator", "tts", {"language": "es"}), alice)
    with pytest.raises(NotFound):
        platform.update_agent(UpdateAgent(agent_id, {"name": "mine"}), bob)
    with pytest.raises(Forbidden):
        platform.update_agent(UpdateAgent(agent_id, {"name": "mine"}), VIEWER)
    with pytest.raises(InvalidCommand) as info:
        platform.update_agent(UpdateAgent(agent_id, {"configuration": {"nope": 1}}), alice)
    assert info.value.fields[0].path == ("configuration", "nope")
    platform.set_agent_status(SetAgentStatus(agent_id, False), alice)
    with pytest.raises(Conflict):
        platform.set_agent_status(SetAgentStatus(agent_id, False), alice)
    platform.delete_agent(DeleteAgent(agent_id), ADMIN)
    with pytest.raises(NotFound):
        platform.delete_agent(DeleteAgent(agent_id), ADMIN)


def test_providers_are_admins_and_their_keys_are_encrypted_by_the_policy(platform: Platform) -> None:
    alice = signed_in(platform, "alice")
    cmd = CreateProvider("local llm", "openai_compatible", "https://llm.example.com/v1", "sk-secret")
    with pytest.raises(Forbidden):
        platform.create_provider(cmd, alice)
    provider_id, _ = platform.create_provider(cmd, ADMIN)
    stored = platform.repository.get(provider_id)
    assert stored.api_key_encrypted == "sealed:terces-ks" and platform.decrypt(stored.api_key_encrypted) == "sk-secret"
    with pytest.raises(InvalidCommand, match="needs a base_url"):
        platform.update_provider(UpdateProvider(provider_id, {"base_url": None}), ADMIN)
    with pytest.raises(NotFound):
        platform.update_provider(UpdateProvider(uuid.uuid4(), {"name": "x"}), ADMIN)
    platform.delete_provider(DeleteProvider(provider_id), ADMIN)
    with pytest.raises(NotFound):
        platform.delete_provider(DeleteProvider(provider_id), ADMIN)
