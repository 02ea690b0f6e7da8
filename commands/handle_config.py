"""Command handlers for settings, AI agents and AI providers.

Each handler reads load → check → change → save and runs in
:func:`~commands.base.retry_on_conflict`."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from pydantic import TypeAdapter, ValidationError

from commands.agent import Agent, Provider
from commands.base import Position, ServiceBase, retry_on_conflict
from commands.context import Actor, Context
from commands.errors import FieldError, Forbidden, InvalidCommand, NotFound, invalid
from commands.job_parameters import SCHEMAS
from commands.messages import (
    ChangeSetting,
    CreateAgent,
    CreateProvider,
    DeleteAgent,
    DeleteProvider,
    DeleteSetting,
    SetAgentStatus,
    SetSetting,
    UpdateAgent,
    UpdateProvider,
)
from commands.outbound import check_url
from commands.permissions import require_admin, require_owner, require_writer
from commands.setting import Setting
from commands.setting_keys import LIMIT_KEYS, check_key, validate_setting
from commands.text import clean_json, clean_optional, clean_text
from commands.user import User

PROVIDER_KINDS = ("local", "openai_compatible")
AGENT_FIELDS = frozenset({"name", "description", "configuration", "provider_id"})
PROVIDER_FIELDS = frozenset({"name", "base_url", "enabled", "api_key"})


def validate_configuration(job_type: str, configuration: dict[str, Any]) -> dict[str, Any]:
    """An agent's configuration checked field by field against ``job_type``'s parameter
    schema (required fields may be left to the job), every string in NFC. Raises InvalidCommand."""
    schema = SCHEMAS.get(job_type) if isinstance(job_type, str) else None
    if schema is None:
        raise invalid("type", f"must be one of {', '.join(SCHEMAS)}")
    if not isinstance(configuration, dict):
        raise invalid("configuration", "must be an object")
    configuration = clean_json(configuration, "configuration")
    fields = []
    for key, value in configuration.items():
        field = schema.model_fields.get(key)
        if field is None:
            fields.append(FieldError(("configuration", key), f"a {job_type} job has no parameter {key!r}"))
            continue
        try:
            TypeAdapter(Annotated[field.annotation, *field.metadata]).validate_python(value)  # type: ignore[arg-type]
        except ValidationError as exc:
            fields.append(FieldError(("configuration", key), exc.errors()[0]["msg"]))
    if fields:
        raise InvalidCommand(f"invalid configuration for a {job_type} agent", fields=fields)
    return configuration


def _agent_name(name: object) -> str:
    return clean_text(name, "name", min_length=1, max_length=200, strip=True)


def _description(description: object) -> str:
    return clean_text(description, "description", max_length=10_000, multiline=True)


def _check_setting_access(actor: Actor, setting_id: object, key: str, user_id: str | None) -> None:
    """Global settings are admins'; a user's setting is the user's or admins' (another's is
    NotFound), and a user's limit keys (:data:`LIMIT_KEYS`, quotas) are admins' to set.
    Raises Forbidden, NotFound."""
    if user_id is None:
        require_admin(actor, "global settings")
    elif not actor.is_admin and user_id != actor.id:
        raise NotFound(f"no setting {setting_id}")
    if user_id is not None and key in LIMIT_KEYS and not actor.is_admin:
        raise Forbidden(f"only admins set a user's {key}")


class ConfigHandlers(ServiceBase):
    """Settings (global: admins; per user: the user or admins), agents (their owners and
    admins) and providers (admins)."""

    # -- settings ------------------------------------------------------------------------------

    def _setting_user(self, user_id: str | None, actor: Actor) -> str | None:
        if user_id is None:
            return None
        if not actor.is_admin and user_id != actor.id:
            raise NotFound(f"no user {user_id!r}")
        user = self._get(User, user_id)
        if user is None:
            raise invalid("user", f"no user {user_id!r}")
        return str(user.id)

    @retry_on_conflict
    def set_setting(self, cmd: SetSetting, ctx: Context) -> tuple[UUID, Position]:
        """Create or change a setting; unique per (user, key). Global settings and a user's
        limit keys (:data:`~commands.setting_keys.LIMIT_KEYS`) are admins' only.

        Raises Forbidden, NotFound, InvalidCommand (unknown key, invalid value or user).
        """
        if cmd.user_id is None:
            require_admin(ctx.actor, "global settings")
        user_id = self._setting_user(cmd.user_id, ctx.actor)
        key = check_key(cmd.key)
        _check_setting_access(ctx.actor, key, key, user_id)
        value = validate_setting(key, cmd.value, user_id)
        setting = self._get(Setting, Setting.create_id(key, user_id))
        if setting is None:
            setting = Setting(key=key, value=value, user_id=user_id)
        else:
            setting.change(value)
        return setting.id, self._save(setting)

    @retry_on_conflict
    def change_setting(self, cmd: ChangeSetting, ctx: Context) -> Position:
        """Give a setting a new value. Raises NotFound, Forbidden, InvalidCommand."""
        setting = self._load(Setting, cmd.setting_id, "setting")
        _check_setting_access(ctx.actor, cmd.setting_id, setting.key, setting.user_id)
        setting.change(validate_setting(setting.key, cmd.value, setting.user_id))
        return self._save(setting)

    @retry_on_conflict
    def delete_setting(self, cmd: DeleteSetting, ctx: Context) -> Position:
        """Remove a setting. Raises Forbidden, NotFound."""
        setting = self._load(Setting, cmd.setting_id, "setting")
        _check_setting_access(ctx.actor, cmd.setting_id, setting.key, setting.user_id)
        setting.delete()
        return self._save(setting)

    # -- agents ----------------------------------------------------------------------------------

    def _check_provider(self, provider_id: UUID | str | None) -> str | None:
        if provider_id is None:
            return None
        provider = self._get(Provider, provider_id)
        if provider is None or provider.deleted:
            raise invalid("provider", f"no provider {provider_id}")
        return str(provider.id)

    def _owned_agent(self, agent_id: UUID, actor: Actor) -> Agent:
        agent = self._load(Agent, agent_id, "agent")
        require_owner(actor, agent.owner_id, "agent", agent.id)
        return agent

    @retry_on_conflict
    def create_agent(self, cmd: CreateAgent, ctx: Context) -> tuple[UUID, Position]:
        """Save an agent owned by the actor. Raises Forbidden (viewer), InvalidCommand."""
        require_writer(ctx.actor)
        name, description = _agent_name(cmd.name), _description(cmd.description)
        configuration = validate_configuration(cmd.type, cmd.configuration)
        provider_id = self._check_provider(cmd.provider_id)
        agent = Agent(
            name=name,
            description=description,
            type=cmd.type,
            configuration=configuration,
            provider_id=provider_id,
            owner_id=ctx.actor.id,
        )
        return agent.id, self._save(agent)

    @retry_on_conflict
    def update_agent(self, cmd: UpdateAgent, ctx: Context) -> Position:
        """Change an agent (configuration re-validated against its type). ``name``,
        ``description`` and ``configuration`` may not be ``null``; ``provider_id`` ``null``
        removes the provider. Raises Forbidden, NotFound, InvalidCommand."""
        agent = self._owned_agent(cmd.agent_id, ctx.actor)
        unknown = set(cmd.changes) - AGENT_FIELDS
        if unknown:
            raise invalid(sorted(unknown)[0], "cannot be changed")
        changes = dict(cmd.changes)
        if "name" in changes:
            changes["name"] = _agent_name(changes["name"])
        if "description" in changes:
            changes["description"] = _description(changes["description"])
        if "configuration" in changes:
            if changes["configuration"] is None:
                raise invalid("configuration", "must not be null")
            changes["configuration"] = validate_configuration(agent.type, changes["configuration"])
        if "provider_id" in changes:
            changes["provider_id"] = self._check_provider(changes["provider_id"])
        agent.update(changes)
        return self._save(agent)

    @retry_on_conflict
    def set_agent_status(self, cmd: SetAgentStatus, ctx: Context) -> Position:
        """Activate or deactivate an agent. Raises NotFound, Forbidden, Conflict (it already is)."""
        agent = self._owned_agent(cmd.agent_id, ctx.actor)
        if cmd.active:
            agent.activate()
        else:
            agent.deactivate()
        return self._save(agent)

    @retry_on_conflict
    def delete_agent(self, cmd: DeleteAgent, ctx: Context) -> Position:
        """Remove an agent. Raises NotFound, Forbidden."""
        agent = self._owned_agent(cmd.agent_id, ctx.actor)
        agent.delete()
        return self._save(agent)

    # -- providers ---------------------------------------------------------------------------------

    def _check_base_url(self, base_url: str | None) -> None:
        if base_url is not None:  # syntax and literal addresses; names are checked per request
            check_url(base_url, field="base_url", allowed_networks=self.policies.provider_allowed_networks)

    @retry_on_conflict
    def create_provider(self, cmd: CreateProvider, ctx: Context) -> tuple[UUID, Position]:
        """Register a provider (admins); the API key is encrypted before it is stored.
        Raises Forbidden, InvalidCommand."""
        require_admin(ctx.actor, "providers")
        name = clean_text(cmd.name, "name", min_length=1, max_length=200, strip=True)
        base_url = clean_optional(cmd.base_url, "base_url", max_length=2000)
        api_key = clean_optional(cmd.api_key, "api_key", max_length=4000)
        if not isinstance(cmd.enabled, bool):
            raise invalid("enabled", "must be true or false")
        if cmd.kind is not None and cmd.kind not in PROVIDER_KINDS:
            raise invalid("kind", f"must be one of {', '.join(PROVIDER_KINDS)}")
        self._check_base_url(base_url)
        if cmd.kind == "openai_compatible" and not base_url:
            raise invalid("base_url", "an openai_compatible provider needs a base_url")
        encrypted = self.policies.encrypt(api_key) if api_key else None
        provider = Provider(name=name, kind=cmd.kind, base_url=base_url, api_key_encrypted=encrypted, enabled=cmd.enabled)
        return provider.id, self._save(provider)

    def _provider_changes(self, given: dict[str, Any]) -> dict[str, Any]:
        unknown = set(given) - PROVIDER_FIELDS
        if unknown:
            raise invalid(sorted(unknown)[0], "cannot be changed")
        changes = dict(given)
        if "name" in changes:
            changes["name"] = clean_text(changes["name"], "name", min_length=1, max_length=200, strip=True)
        if "enabled" in changes and not isinstance(changes["enabled"], bool):
            raise invalid("enabled", "must be true or false")
        if "base_url" in changes:
            changes["base_url"] = clean_optional(changes["base_url"], "base_url", max_length=2000)
            self._check_base_url(changes["base_url"])
        if "api_key" in changes:
            key = clean_optional(changes.pop("api_key"), "api_key", max_length=4000)
            changes["api_key_encrypted"] = self.policies.encrypt(key) if key else None
        return changes

    @retry_on_conflict
    def update_provider(self, cmd: UpdateProvider, ctx: Context) -> Position:
        """Change a provider (admins); a new ``api_key`` is encrypted, an empty or ``null``
        one removes it. ``name`` and ``enabled`` may not be ``null``; nor may ``base_url``
        of an openai_compatible provider. Raises Forbidden, NotFound, InvalidCommand."""
        require_admin(ctx.actor, "providers")
        provider = self._load(Provider, cmd.provider_id, "provider")
        changes = self._provider_changes(cmd.changes)
        if "base_url" in changes and not changes["base_url"] and provider.kind == "openai_compatible":
            raise invalid("base_url", "an openai_compatible provider needs a base_url")
        provider.update(changes)
        return self._save(provider)

    @retry_on_conflict
    def delete_provider(self, cmd: DeleteProvider, ctx: Context) -> Position:
        """Remove a provider (admins). Raises Forbidden, NotFound."""
        require_admin(ctx.actor, "providers")
        provider = self._load(Provider, cmd.provider_id, "provider")
        provider.delete()
        return self._save(provider)
