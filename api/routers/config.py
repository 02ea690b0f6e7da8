"""``/api/settings/``, ``/api/agents/`` and ``/api/providers/``."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import or_, select

from api.deps import CommandCtx, CurrentUser, ReadPosition, Services, ServicesDep, after_write, created
from api.pagination import PageParams, page_params, paginate
from api.schemas import ACCEPTED, LAGGING, AgentOut, EffectiveSettings, Page, ProviderOut, SettingOut, ok
from api.views import agent_json, provider_json, setting_json
from commands.context import Context
from commands.errors import NotFound
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
from commands.permissions import require_admin
from projections import tables as t
from projections.queries import Viewer, visible_agents

settings_router = APIRouter(prefix="/api/settings", tags=["settings"])
agents_router = APIRouter(prefix="/api/agents", tags=["agents"])
providers_router = APIRouter(prefix="/api/providers", tags=["providers"])


# -- settings --------------------------------------------------------------------------------------


class SettingIn(BaseModel):
    """A setting: without ``user`` it is global (admins only)."""

    key: str = Field(min_length=1, max_length=100, examples=["max_concurrent_jobs"])
    value: Any = Field(examples=[2])
    user: str | None = None


class SettingPatch(BaseModel):
    """A new value."""

    value: Any


def visible_settings(user: Viewer) -> Any:
    """Admins see every setting; others the global ones and their own."""
    stmt = select(t.settings).where(t.settings.c.deleted.is_(False))
    if user["role"] != "admin":
        stmt = stmt.where(or_(t.settings.c.user_id.is_(None), t.settings.c.user_id == user["id"]))
    return stmt


def load_setting(services: Services, user: Viewer, setting_id: str) -> dict[str, Any]:
    """A visible setting row. Raises NotFound."""
    with services.engine.connect() as conn:
        row = conn.execute(visible_settings(user).where(t.settings.c.id == setting_id)).mappings().first()
    if row is None:
        raise NotFound(f"no setting {setting_id}")
    return dict(row)


@settings_router.get("/", dependencies=[ReadPosition], response_model=None, responses=ok(Page[SettingOut]))
def list_settings(
    request: Request,
    services: ServicesDep,
    user: CurrentUser,
    params: Annotated[PageParams, Depends(page_params)],
    key: str | None = None,
    scope: Literal["global", "user"] | None = None,
) -> dict[str, Any]:
    """Settings the user may see, by key. ``?key=``, ``?scope=global|user``."""
    stmt = visible_settings(user)
    if key:
        stmt = stmt.where(t.settings.c.key == key)
    if scope:
        stmt = stmt.where(t.settings.c.user_id.is_(None) if scope == "global" else t.settings.c.user_id.is_not(None))
    with services.engine.connect() as conn:
        return paginate(request, conn, stmt.order_by(t.settings.c.key, t.settings.c.id), params, setting_json)


@settings_router.get("/effective/", dependencies=[ReadPosition], response_model=None, responses=ok(EffectiveSettings))
def effective_settings(services: ServicesDep, user: CurrentUser) -> dict[str, Any]:
    """The caller's settings as a flat ``{key: value}``: user over global over defaults."""
    return dict(services.effective_settings(user["id"]))


@settings_router.post("/", status_code=201, responses={**ok(SettingOut, 201), **ACCEPTED})
async def create_setting(body: SettingIn, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Set a global (admins) or per-user (the user or admins) setting; unique per (user, key)."""
    setting_id, position = await services.command(services.platform.set_setting, SetSetting(body.key, body.value, body.user), ctx)
    return await created(
        services,
        position,
        f"/api/settings/{setting_id}/",
        str(setting_id),
        lambda: setting_json(load_setting(services, user, str(setting_id))),
    )


@settings_router.get("/{setting_id}/", dependencies=[ReadPosition], response_model=None, responses=ok(SettingOut))
def get_setting(setting_id: UUID, services: ServicesDep, user: CurrentUser) -> dict[str, Any]:
    """One setting."""
    return setting_json(load_setting(services, user, str(setting_id)))


async def _set(setting_id: UUID, value: Any, services: Services, ctx: Context, user: Viewer) -> Response:
    position = await services.command(services.platform.change_setting, ChangeSetting(setting_id, value), ctx)
    return await after_write(services, position, lambda: setting_json(load_setting(services, user, str(setting_id))))


@settings_router.put("/{setting_id}/", responses={**ok(SettingOut), **LAGGING})
async def replace_setting(
    setting_id: UUID, body: SettingPatch, services: ServicesDep, ctx: CommandCtx, user: CurrentUser
) -> Response:
    """Give a setting a new value."""
    return await _set(setting_id, body.value, services, ctx, user)


@settings_router.patch("/{setting_id}/", responses={**ok(SettingOut), **LAGGING})
async def update_setting(
    setting_id: UUID, body: SettingPatch, services: ServicesDep, ctx: CommandCtx, user: CurrentUser
) -> Response:
    """Give a setting a new value."""
    return await _set(setting_id, body.value, services, ctx, user)


@settings_router.delete("/{setting_id}/", status_code=204, response_class=Response, responses=LAGGING)
async def delete_setting(setting_id: UUID, services: ServicesDep, ctx: CommandCtx) -> Response:
    """Remove a setting (204); the global value or the default applies again."""
    position = await services.command(services.platform.delete_setting, DeleteSetting(setting_id), ctx)
    return await after_write(services, position)


# -- agents ------------------------------------------------------------------------------------------


class AgentIn(BaseModel):
    """A saved agent: default parameters for jobs of ``type``."""

    name: str = Field(min_length=1, max_length=200, examples=["Spanish narrator"])
    description: str = Field(default="", max_length=10_000)
    type: str = Field(examples=["tts"])
    configuration: dict[str, Any] = Field(default_factory=dict, examples=[{"language": "es"}])
    provider: UUID | None = None


class AgentPatch(BaseModel):
    """Fields to change."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    configuration: dict[str, Any] | None = None
    provider: UUID | None = None


def load_agent(services: Services, user: Viewer, agent_id: str) -> dict[str, Any]:
    """A visible agent row. Raises NotFound."""
    with services.engine.connect() as conn:
        row = conn.execute(visible_agents(select(t.agents), user).where(t.agents.c.id == agent_id)).mappings().first()
    if row is None:
        raise NotFound(f"no agent {agent_id}")
    return dict(row)


@agents_router.get("/", dependencies=[ReadPosition], response_model=None, responses=ok(Page[AgentOut]))
def list_agents(
    request: Request,
    services: ServicesDep,
    user: CurrentUser,
    params: Annotated[PageParams, Depends(page_params)],
    type: str | None = None,
    status: Literal["active", "inactive"] | None = None,
) -> dict[str, Any]:
    """Agents the user may see, newest first. ``?type=``, ``?status=``."""
    stmt = visible_agents(select(t.agents), user)
    if type:
        stmt = stmt.where(t.agents.c.type == type)
    if status:
        stmt = stmt.where(t.agents.c.status == status)
    with services.engine.connect() as conn:
        return paginate(request, conn, stmt.order_by(t.agents.c.created_at.desc(), t.agents.c.id), params, agent_json)


@agents_router.post("/", status_code=201, responses={**ok(AgentOut, 201), **ACCEPTED})
async def create_agent(body: AgentIn, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Save an agent; its configuration is checked against the job type's parameters."""
    cmd = CreateAgent(body.name, body.type, body.configuration, body.description, body.provider)
    agent_id, position = await services.command(services.platform.create_agent, cmd, ctx)
    return await created(
        services,
        position,
        f"/api/agents/{agent_id}/",
        str(agent_id),
        lambda: agent_json(load_agent(services, user, str(agent_id))),
    )


@agents_router.get("/{agent_id}/", dependencies=[ReadPosition], response_model=None, responses=ok(AgentOut))
def get_agent(agent_id: UUID, services: ServicesDep, user: CurrentUser) -> dict[str, Any]:
    """One agent."""
    return agent_json(load_agent(services, user, str(agent_id)))


async def _agent_answer(agent_id: UUID, services: Services, user: Viewer, position: int) -> Response:
    return await after_write(services, position, lambda: agent_json(load_agent(services, user, str(agent_id))))


@agents_router.put("/{agent_id}/", responses={**ok(AgentOut), **LAGGING})
async def replace_agent(agent_id: UUID, body: AgentIn, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Replace an agent's name, description, configuration and provider (its type stays)."""
    changes = {
        "name": body.name,
        "description": body.description,
        "configuration": body.configuration,
        "provider_id": body.provider,
    }
    position = await services.command(services.platform.update_agent, UpdateAgent(agent_id, changes), ctx)
    return await _agent_answer(agent_id, services, user, position)


@agents_router.patch("/{agent_id}/", responses={**ok(AgentOut), **LAGGING})
async def update_agent(agent_id: UUID, body: AgentPatch, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Change an agent."""
    given = body.model_dump(exclude_unset=True)
    if "provider" in given:
        given["provider_id"] = given.pop("provider")
    position = await services.command(services.platform.update_agent, UpdateAgent(agent_id, given), ctx)
    return await _agent_answer(agent_id, services, user, position)


@agents_router.post("/{agent_id}/activate/", responses={**ok(AgentOut), **LAGGING})
async def activate_agent(agent_id: UUID, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Let jobs name the agent (409 if already active)."""
    position = await services.command(services.platform.set_agent_status, SetAgentStatus(agent_id, True), ctx)
    return await _agent_answer(agent_id, services, user, position)


@agents_router.post("/{agent_id}/deactivate/", responses={**ok(AgentOut), **LAGGING})
async def deactivate_agent(agent_id: UUID, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Refuse jobs naming the agent (409 if already inactive)."""
    position = await services.command(services.platform.set_agent_status, SetAgentStatus(agent_id, False), ctx)
    return await _agent_answer(agent_id, services, user, position)


@agents_router.delete("/{agent_id}/", status_code=204, response_class=Response, responses=LAGGING)
async def delete_agent(agent_id: UUID, services: ServicesDep, ctx: CommandCtx) -> Response:
    """Remove an agent (204)."""
    position = await services.command(services.platform.delete_agent, DeleteAgent(agent_id), ctx)
    return await after_write(services, position)


# -- providers ---------------------------------------------------------------------------------------


class ProviderIn(BaseModel):
    """An AI provider. ``api_key`` is write-only: stored encrypted, never answered."""

    name: str = Field(min_length=1, max_length=200, examples=["Local OpenAI-compatible server"])
    kind: Literal["local", "openai_compatible"] = "openai_compatible"
    base_url: str | None = Field(default=None, max_length=2000, examples=["http://127.0.0.1:8080/v1"])
    api_key: str | None = Field(default=None, max_length=4000, json_schema_extra={"writeOnly": True})
    enabled: bool = True


class ProviderPatch(BaseModel):
    """Fields to change; an empty ``api_key`` removes the key."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    base_url: str | None = Field(default=None, max_length=2000)
    api_key: str | None = Field(default=None, max_length=4000, json_schema_extra={"writeOnly": True})
    enabled: bool | None = None


def load_provider(services: Services, provider_id: str) -> dict[str, Any]:
    """A provider row. Raises NotFound."""
    with services.engine.connect() as conn:
        row = conn.execute(select(t.providers).where(t.providers.c.id == provider_id)).mappings().first()
    if row is None:
        raise NotFound(f"no provider {provider_id}")
    return dict(row)


def _admin(user: CurrentUser) -> None:
    require_admin(user.actor, "providers")


@providers_router.get("/", dependencies=[ReadPosition], response_model=None, responses=ok(Page[ProviderOut]))
def list_providers(
    request: Request, services: ServicesDep, user: CurrentUser, params: Annotated[PageParams, Depends(page_params)]
) -> dict[str, Any]:
    """Every provider (admins)."""
    _admin(user)
    with services.engine.connect() as conn:
        stmt = select(t.providers).order_by(t.providers.c.created_at.desc(), t.providers.c.id)
        return paginate(request, conn, stmt, params, provider_json)


@providers_router.post("/", status_code=201, responses={**ok(ProviderOut, 201), **ACCEPTED})
async def create_provider(body: ProviderIn, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Register a provider (admins)."""
    cmd = CreateProvider(body.name, body.kind, body.base_url, body.api_key, body.enabled)
    provider_id, position = await services.command(services.platform.create_provider, cmd, ctx)
    return await created(
        services,
        position,
        f"/api/providers/{provider_id}/",
        str(provider_id),
        lambda: provider_json(load_provider(services, str(provider_id))),
    )


@providers_router.get("/{provider_id}/", dependencies=[ReadPosition], response_model=None, responses=ok(ProviderOut))
def get_provider(provider_id: UUID, services: ServicesDep, user: CurrentUser) -> dict[str, Any]:
    """One provider (admins)."""
    _admin(user)
    return provider_json(load_provider(services, str(provider_id)))


async def _provider_write(provider_id: UUID, changes: dict[str, Any], services: Services, ctx: Context) -> Response:
    position = await services.command(services.platform.update_provider, UpdateProvider(provider_id, changes), ctx)
    return await after_write(services, position, lambda: provider_json(load_provider(services, str(provider_id))))


@providers_router.put("/{provider_id}/", responses={**ok(ProviderOut), **LAGGING})
async def replace_provider(provider_id: UUID, body: ProviderIn, services: ServicesDep, ctx: CommandCtx) -> Response:
    """Replace a provider's fields (admins; its kind stays)."""
    changes = body.model_dump(exclude={"kind"})
    if changes["api_key"] is None:  # write-only: a replacement that omits it keeps it
        del changes["api_key"]
    return await _provider_write(provider_id, changes, services, ctx)


@providers_router.patch("/{provider_id}/", responses={**ok(ProviderOut), **LAGGING})
async def update_provider(provider_id: UUID, body: ProviderPatch, services: ServicesDep, ctx: CommandCtx) -> Response:
    """Change a provider (admins)."""
    return await _provider_write(provider_id, body.model_dump(exclude_unset=True), services, ctx)


@providers_router.delete("/{provider_id}/", status_code=204, response_class=Response, responses=LAGGING)
async def delete_provider(provider_id: UUID, services: ServicesDep, ctx: CommandCtx) -> Response:
    """Remove a provider (admins, 204)."""
    position = await services.command(services.platform.delete_provider, DeleteProvider(provider_id), ctx)
    return await after_write(services, position)
