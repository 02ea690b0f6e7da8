"""Command handlers for settings, AI agents and AI providers."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from pydantic import TypeAdapter, ValidationError

from commands.agent import Agent, Provider
from commands.base import Position, ServiceBase, invalid
from commands.context import Context, acting_as
from commands.errors import Conflict, Forbidden, InvalidCommand, NotFound
from commands.job_parameters import SCHEMAS
from commands.messages import (
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
from commands.outbound import Network, check_url
from commands.permissions import require_admin, require_owner, require_writer
from commands.setting import Setting
from commands.setting_keys import LIMIT_KEYS, check_key, validate_setting
from commands.text import clean_json, clean_optional, clean_text
from commands.user import User

PROVIDER_KINDS = ("local", "openai_compatible")


def validate_configuration(job_type: str, configuration: dict[str, Any]) -> dict[str, Any]:
    """An agent's configuration checked field by field against ``job_type``'s parameter
    schema (required fields may be left to the job), every string in NFC. Raises InvalidCommand."""
    schema = SCHEMAS.get(job_type) if isinstance(job_type, str) else None
    if schema is None:
        raise invalid("type", f"must be one of {', '.join(SCHEMAS)}")
    if not isinstance(configuration, dict):
        raise invalid("configuration", "must be an object")
    configuration = clean_json(configuration, "configuration")
    errors = []
    for key, value in configuration.items():
        field = schema.model_fields.get(key)
        if field is None:
            errors.append({"loc": ["body", "configuration", key], "msg": f"a {job_type} job has no parameter {key!r}"})
            continue
        try:
            TypeAdapter(Annotated[field.annotation, *field.metadata]).validate_python(value)  # type: ignore[arg-type]
        except ValidationError as exc:
            errors.append({"loc": ["body", "configuration", key], "msg": exc.errors()[0]["msg"]})
    if errors:
        raise InvalidCommand(f"invalid configuration for a {job_type} agent", errors=errors)
    return configuration


def _agent_name(name: object) -> str:
    return clean_text(name, "name", min_length=1, max_length=200, strip=True)


def _description(description: object) -> str:
    return clean_text(description, "description", max_length=10_000, multiline=True)


def _limit_keys_by_admins(key: str, user_id: str | None, ctx: Context) -> None:
    """Quotas hold: a user's own value of a limit key is an admin's to set or remove."""
    if user_id is not None and key in LIMIT_KEYS and not ctx.actor.is_admin:
        raise Forbidden(f"only admins set a user's {key}")


class ConfigHandlers(ServiceBase):
    """Settings (global: admins; per user: the user or admins), agents (their owners and
    admins) and providers (admins)."""

    #: CIDRs where providers may live although not public (``AIORCH_PROVIDER_ALLOWED_NETWORKS``)
    provider_allowed_networks: tuple[Network, ...] = ()

    # -- settings ------------------------------------------------------------------------------

    def set_setting(self, cmd: SetSetting, ctx: Context) -> tuple[UUID, Position]:
        """Create or change a setting; unique per (user, key). Global settings and a user's
        limit keys (:data:`~commands.setting_keys.LIMIT_KEYS`) are admins' only.

        Raises Forbidden, NotFound, InvalidCommand (unknown key, invalid value or user).
        """
        user_id: str | None = None
        if cmd.user_id is None:
            require_admin(ctx.actor, "global settings")
        elif not ctx.actor.is_admin and cmd.user_id != ctx.actor.id:
            raise NotFound(f"no user {cmd.user_id!r}")
        else:
            user = self._get(User, cmd.user_id)
            if user is None:
                raise invalid("user", f"no user {cmd.user_id!r}")
            user_id = str(user.id)
        key = check_key(cmd.key)
        _limit_keys_by_admins(key, user_id, ctx)
        value = validate_setting(key, cmd.value, user_id)
        setting_id = Setting.create_id(key, user_id)
        for _attempt in range(5):
            setting = self._get(Setting, setting_id)
            with acting_as(ctx):
                if setting is None:
                    setting = Setting(key=key, value=value, user_id=user_id)
                else:
                    setting.change(value)
            if not setting.pending_events:
                return setting.id, self.head()
            try:
                return setting.id, self._save(setting)
            except Conflict:
                continue
        raise Conflict("the setting kept changing; retry")

    def delete_setting(self, cmd: DeleteSetting, ctx: Context) -> Position:
        """Remove a setting. Raises Forbidden, NotFound."""

        def change(setting: Setting) -> None:
            if setting.user_id is None:
                require_admin(ctx.actor, "global settings")
            elif not ctx.actor.is_admin and setting.user_id != ctx.actor.id:
                raise NotFound(f"no setting {cmd.setting_id}")
            _limit_keys_by_admins(setting.key, setting.user_id, ctx)
            setting.delete()

        return self._change(Setting, cmd.setting_id, "setting", ctx, change)

    # -- agents ----------------------------------------------------------------------------------

    def _check_provider(self, provider_id: UUID | str | None) -> str | None:
        if provider_id is None:
            return None
        provider = self._get(Provider, provider_id)
        if provider is None or provider.deleted:
            raise invalid("provider", f"no provider {provider_id}")
        return str(provider.id)

    def create_agent(self, cmd: CreateAgent, ctx: Context) -> tuple[UUID, Position]:
        """Save an agent owned by the actor. Raises Forbidden (viewer), InvalidCommand."""
        require_writer(ctx.actor)
        name, description = _agent_name(cmd.name), _description(cmd.description)
        configuration = validate_configuration(cmd.type, cmd.configuration)
        provider_id = self._check_provider(cmd.provider_id)
        with acting_as(ctx):
            agent = Agent(
                name=name,
                description=description,
                type=cmd.type,
                configuration=configuration,
                provider_id=provider_id,
                owner_id=ctx.actor.id,
            )
        return agent.id, self._save(agent)

    def update_agent(self, cmd: UpdateAgent, ctx: Context) -> Position:
        """Change an agent (configuration re-validated against its type). ``name``,
        ``description`` and ``configuration`` may not be ``null``; ``provider_id`` ``null``
        removes the provider. Raises Forbidden, NotFound, InvalidCommand."""
        allowed = {"name", "description", "configuration", "provider_id"}
        unknown = set(cmd.changes) - allowed
        if unknown:
            raise invalid(sorted(unknown)[0], "cannot be changed")
        checked = dict(cmd.changes)
        if "name" in checked:
            checked["name"] = _agent_name(checked["name"])
        if "description" in checked:
            checked["description"] = _description(checked["description"])
        if "configuration" in checked and checked["configuration"] is None:
            raise invalid("configuration", "must not be null")

        def change(agent: Agent) -> None:
            require_owner(ctx.actor, agent.owner_id, "agent", agent.id)
            changes = dict(checked)
            if "configuration" in changes:
                changes["configuration"] = validate_configuration(agent.type, changes["configuration"])
            if "provider_id" in changes:
                changes["provider_id"] = self._check_provider(changes["provider_id"])
            agent.update(changes)

        return self._change(Agent, cmd.agent_id, "agent", ctx, change)

    def set_agent_status(self, cmd: SetAgentStatus, ctx: Context) -> Position:
        """Activate or deactivate an agent. Raises Conflict if it already is."""

        def change(agent: Agent) -> None:
            require_owner(ctx.actor, agent.owner_id, "agent", agent.id)
            agent.activate() if cmd.active else agent.deactivate()

        return self._change(Agent, cmd.agent_id, "agent", ctx, change)

    def delete_agent(self, cmd: DeleteAgent, ctx: Context) -> Position:
        """Remove an agent."""

        def change(agent: Agent) -> None:
            require_owner(ctx.actor, agent.owner_id, "agent", agent.id)
            agent.delete()

        return self._change(Agent, cmd.agent_id, "agent", ctx, change)

    # -- providers ---------------------------------------------------------------------------------

    def _provider_fields(self, kind: str | None, base_url: str | None) -> None:
        if kind is not None and kind not in PROVIDER_KINDS:
            raise invalid("kind", f"must be one of {', '.join(PROVIDER_KINDS)}")
        if base_url is not None:  # syntax and literal addresses; names are checked per request
            check_url(base_url, field="base_url", allowed_networks=self.provider_allowed_networks)

    def create_provider(self, cmd: CreateProvider, ctx: Context) -> tuple[UUID, Position]:
        """Register a provider (admins); the API key is encrypted before it is stored."""
        require_admin(ctx.actor, "providers")
        name = clean_text(cmd.name, "name", min_length=1, max_length=200, strip=True)
        base_url = clean_optional(cmd.base_url, "base_url", max_length=2000)
        api_key = clean_optional(cmd.api_key, "api_key", max_length=4000)
        if not isinstance(cmd.enabled, bool):
            raise invalid("enabled", "must be true or false")
        self._provider_fields(cmd.kind, base_url)
        if cmd.kind == "openai_compatible" and not base_url:
            raise invalid("base_url", "an openai_compatible provider needs a base_url")
        encrypted = self.encrypt(api_key) if api_key else None
        with acting_as(ctx):
            provider = Provider(name=name, kind=cmd.kind, base_url=base_url, api_key_encrypted=encrypted, enabled=cmd.enabled)
        return provider.id, self._save(provider)

    def update_provider(self, cmd: UpdateProvider, ctx: Context) -> Position:
        """Change a provider (admins); a new ``api_key`` is encrypted, an empty or ``null``
        one removes it. ``name`` and ``enabled`` may not be ``null``; nor may ``base_url``
        of an openai_compatible provider."""
        require_admin(ctx.actor, "providers")
        changes = dict(cmd.changes)
        unknown = set(changes) - {"name", "base_url", "enabled", "api_key"}
        if unknown:
            raise invalid(sorted(unknown)[0], "cannot be changed")
        if "name" in changes:
            changes["name"] = clean_text(changes["name"], "name", min_length=1, max_length=200, strip=True)
        if "enabled" in changes and not isinstance(changes["enabled"], bool):
            raise invalid("enabled", "must be true or false")
        if "base_url" in changes:
            changes["base_url"] = clean_optional(changes["base_url"], "base_url", max_length=2000)
        if "api_key" in changes:
            changes["api_key"] = clean_optional(changes["api_key"], "api_key", max_length=4000)
        self._provider_fields(None, changes.get("base_url"))
        if "api_key" in changes:
            key = changes.pop("api_key")
            changes["api_key_encrypted"] = self.encrypt(key) if key else None

        def change(provider: Provider) -> None:
            if "base_url" in changes and not changes["base_url"] and provider.kind == "openai_compatible":
                raise invalid("base_url", "an openai_compatible provider needs a base_url")
            provider.update(changes)

        return self._change(Provider, cmd.provider_id, "provider", ctx, change)

    def delete_provider(self, cmd: DeleteProvider, ctx: Context) -> Position:
        """Remove a provider (admins)."""
        require_admin(ctx.actor, "providers")
        return self._change(Provider, cmd.provider_id, "provider", ctx, lambda p: p.delete())
