"""The settings, agents, providers and webhook endpoints read models' rows (no database)."""

from __future__ import annotations

import pytest

from events.agents import (
    AgentActivated,
    AgentCreated,
    AgentDeactivated,
    AgentDeleted,
    AgentUpdated,
    ProviderCreated,
    ProviderDeleted,
    ProviderUpdated,
)
from events.settings import SettingChanged, SettingCreated, SettingDeleted
from events.webhooks import (
    WebhookEndpointCreated,
    WebhookEndpointDeleted,
    WebhookEndpointDisabled,
    WebhookEndpointUpdated,
    WebhookTestRequested,
)
from projections.readmodels.agents import agent_row
from projections.readmodels.providers import provider_row
from projections.readmodels.settings import setting_row
from projections.readmodels.webhook_endpoints import endpoint_row
from tests.unit.readmodel_events import at, make


def test_a_setting_is_created_changed_and_deleted() -> None:
    row = setting_row(None, make(SettingCreated, 1, key="default_language", value="en", user_id=None), 2)
    assert (row["key"], row["value"], row["user_id"], row["deleted"]) == ("default_language", "en", None, False)
    changed = setting_row(row, make(SettingChanged, 2, value="fr"), 3)
    assert changed["value"] == "fr" and changed["updated_at"] == at(2) and changed["position"] == 3
    gone = setting_row(changed, make(SettingDeleted, 3), 4)
    assert gone["deleted"] is True and gone["value"] == "fr"


def test_a_deleted_setting_set_again_is_back() -> None:
    row = setting_row(None, make(SettingCreated, 1, key="k", value=1, user_id="u-2"), 2)
    row = setting_row(setting_row(row, make(SettingDeleted, 2), 3), make(SettingChanged, 3, value=2), 4)
    assert row["deleted"] is False and row["value"] == 2 and row["user_id"] == "u-2"


def test_a_setting_change_before_creation_is_refused() -> None:
    with pytest.raises(ValueError):
        setting_row(None, make(SettingChanged, 2, value=1), 3)


def new_agent() -> dict[str, object] | None:
    event = make(
        AgentCreated, 1, name="A", description="", type="tts", configuration={"voice": "v"}, provider_id=None, owner_id="u-1"
    )
    return agent_row(None, event, 7, "alice")


def test_a_new_agent_is_active_with_its_owner() -> None:
    row = new_agent()
    assert row is not None and row["status"] == "active" and row["owner_username"] == "alice"
    assert row["configuration"] == {"voice": "v"} and row["position"] == 7


def test_an_agent_is_deactivated_activated_updated_and_deleted() -> None:
    row = agent_row(new_agent(), make(AgentDeactivated, 2), 8)
    assert row is not None and row["status"] == "inactive"
    row = agent_row(row, make(AgentActivated, 3), 9)
    assert row is not None and row["status"] == "active"
    row = agent_row(row, make(AgentUpdated, 4, changes={"name": "B"}), 10)
    assert row is not None and row["name"] == "B" and row["updated_at"] == at(4)
    assert agent_row(row, make(AgentDeleted, 5), 11) is None


def test_a_provider_shows_only_whether_it_has_a_key() -> None:
    fields = {"name": "P", "kind": "openai_compatible", "base_url": "http://x", "api_key_encrypted": "enc", "enabled": True}
    event = make(ProviderCreated, 1, **fields)
    row = provider_row(None, event, 3)
    assert row is not None and row["has_api_key"] is True and "api_key_encrypted" not in row
    row = provider_row(row, make(ProviderUpdated, 2, changes={"api_key_encrypted": None, "enabled": False, "kind": "x"}), 4)
    assert row is not None and row["has_api_key"] is False and row["enabled"] is False and row["kind"] == "openai_compatible"
    assert provider_row(row, make(ProviderDeleted, 3), 5) is None


def new_endpoint() -> dict[str, object] | None:
    event = make(
        WebhookEndpointCreated,
        1,
        url="https://h/x",
        events=["job.completed"],
        description="d",
        enabled=True,
        owner_id="u-1",
        owner_role="editor",
        secret_encrypted="s",
    )
    return endpoint_row(None, event, 2)


def test_a_new_endpoint_keeps_no_secret() -> None:
    row = new_endpoint()
    assert row is not None and row["url"] == "https://h/x" and row["enabled"] is True and row["disabled_reason"] is None
    assert not any("secret" in k for k in row)


def test_an_endpoint_disabled_then_enabled_forgets_why() -> None:
    row = endpoint_row(new_endpoint(), make(WebhookEndpointDisabled, 2, reason="failing for 3 days"), 3)
    assert row is not None and row["enabled"] is False and row["disabled_reason"] == "failing for 3 days"
    row = endpoint_row(row, make(WebhookEndpointUpdated, 3, changes={"enabled": True, "owner_id": "u-9"}), 4)
    assert row is not None and row["enabled"] is True and row["disabled_reason"] is None and row["owner_id"] == "u-1"


def test_an_endpoint_test_request_changes_nothing_and_a_delete_removes_it() -> None:
    row = new_endpoint()
    assert endpoint_row(row, make(WebhookTestRequested, 2), 3) is row
    assert endpoint_row(row, make(WebhookEndpointDeleted, 3), 4) is None
