"""Command handlers for settings, AI agents and AI providers."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from pydantic import TypeAdapter, ValidationError

from commands.agent import Agent, Provider
from commands.base import Position, ServiceBase, invalid
from commands.context import Context, acting_as
from commands.errors import Conflict, InvalidCommand, NotFound
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
from commands.setting_keys import validate_setting
from commands.user import User

PROVIDER_KINDS = ("local", "openai_compatible")


def validate_configuration(job_type: str, configuration: dict[str, Any]) -> dict[str, Any]:
    """An agent's configuration checked field by field against ``job_type``'s parameter
    schema (required fields may be left to the job). Raises InvalidCommand."""
    schema = SCHEMAS.get(job_type)
    if schema is None:
        raise invalid("type", f"must be one of {', '.join(SCHEMAS)}")
    if not isinstance(configuration, dict):
        raise invalid("configuration", "must be an object")
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


class ConfigHandlers(ServiceBase):
    """Settings (global: admins; per user: the user or admins), agents (their owners and
    admins) and providers (admins)."""

    #: CIDRs where providers may live although not public (``AIORCH_PROVIDER_ALLOWED_NETWORKS``)
    provider_allowed_networks: tuple[Network, ...] = ()

    # -- settings ------------------------------------------------------------------------------

    def set_setting(self, cmd: SetSetting, ctx: Context) -> tuple[UUID, Position]:
        """Create or change a setting; unique per (user, key). Raises Forbidden, NotFound, InvalidCommand."""
        if cmd.user_id is None:
            require_admin(ctx.actor, "global settings")
        elif not ctx.actor.is_admin and cmd.user_id != ctx.actor.id:
            raise NotFound(f"no user {cmd.user_id}")
        elif self._get(User, cmd.user_id) is None:
            raise invalid("user", f"no user {cmd.user_id}")
        value = validate_setting(cmd.key, cmd.value)
        setting_id = Setting.create_id(cmd.key, cmd.user_id)
        for _attempt in range(5):
            setting = self._get(Setting, setting_id)
            with acting_as(ctx):
                if setting is None:
                    setting = Setting(key=cmd.key, value=value, user_id=cmd.user_id)
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
        if not 1 <= len(cmd.name.strip()) <= 200:
            raise invalid("name", "1–200 characters")
        configuration = validate_configuration(cmd.type, cmd.configuration)
        provider_id = self._check_provider(cmd.provider_id)
        with acting_as(ctx):
            agent = Agent(
                name=cmd.name.strip(),
                description=cmd.description,
                type=cmd.type,
                configuration=configuration,
                provider_id=provider_id,
                owner_id=ctx.actor.id,
            )
        return agent.id, self._save(agent)

    def update_agent(self, cmd: UpdateAgent, ctx: Context) -> Position:
        """Change an agent (configuration re-validated against its type)."""
        allowed = {"name", "description", "configuration", "provider_id"}
        unknown = set(cmd.changes) - allowed
        if unknown:
            raise invalid(sorted(unknown)[0], "cannot be changed")

        def change(agent: Agent) -> None:
            require_owner(ctx.actor, agent.owner_id, "agent", agent.id)
            changes = dict(cmd.changes)
            if "configuration" in changes:
                changes["configuration"] = validate_configuration(agent.type, changes["configuration"])
            if "provider_id" in changes:
                changes["provider_id"] = self._check_provider(changes["provider_id"])
            if "name" in changes and not 1 <= len(str(changes["name"]).strip()) <= 200:
                raise invalid("name", "1–200 characters")
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
        if not 1 <= len(cmd.name.strip()) <= 200:
            raise invalid("name", "1–200 characters")
        self._provider_fields(cmd.kind, cmd.base_url)
        if cmd.kind == "openai_compatible" and not cmd.base_url:
            raise invalid("base_url", "an openai_compatible provider needs a base_url")
        encrypted = self.encrypt(cmd.api_key) if cmd.api_key else None
        with acting_as(ctx):
            provider = Provider(
                name=cmd.name.strip(), kind=cmd.kind, base_url=cmd.base_url, api_key_encrypted=encrypted, enabled=cmd.enabled
            )
        return provider.id, self._save(provider)

    def update_provider(self, cmd: UpdateProvider, ctx: Context) -> Position:
        """Change a provider (admins); a new ``api_key`` is encrypted, an empty one removes it."""
        require_admin(ctx.actor, "providers")
        changes = dict(cmd.changes)
        unknown = set(changes) - {"name", "base_url", "enabled", "api_key"}
        if unknown:
            raise invalid(sorted(unknown)[0], "cannot be changed")
        self._provider_fields(None, changes.get("base_url"))
        if "api_key" in changes:
            key = changes.pop("api_key")
            changes["api_key_encrypted"] = self.encrypt(key) if key else None
        return self._change(Provider, cmd.provider_id, "provider", ctx, lambda p: p.update(changes))

    def delete_provider(self, cmd: DeleteProvider, ctx: Context) -> Position:
        """Remove a provider (admins)."""
        require_admin(ctx.actor, "providers")
        return self._change(Provider, cmd.provider_id, "provider", ctx, lambda p: p.delete())
