"""``/api/users/`` (admins) and ``/api/profiles/`` (everyone sees their own; admins all)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.deps import CommandCtx, CurrentUser, ReadPosition, Services, ServicesDep, after_write, created
from api.pagination import PageParams, page_params, paginate
from api.schemas import ACCEPTED, LAGGING, Page, Profile, ok
from api.views import profile_json
from commands.context import Context
from commands.errors import NotFound
from commands.messages import ChangePassword, CreateUser, DeactivateUser, ReactivateUser, ResetPassword, UpdateUser
from commands.permissions import require_admin
from projections import tables as t
from projections.queries import Viewer, search_filter

users = APIRouter(prefix="/api/users", tags=["users"])
profiles = APIRouter(prefix="/api/profiles", tags=["profiles"])
Role = Literal["admin", "editor", "viewer"]


class UserIn(BaseModel):
    """A new user (there is no signup: admins create users)."""

    username: str = Field(min_length=1, max_length=150, examples=["alice"])
    password: str = Field(min_length=8, max_length=1024)
    role: Role = "editor"
    email: str | None = Field(default=None, max_length=254)


class UserPatch(BaseModel):
    """Fields to change; ``role`` only by admins."""

    email: str | None = Field(default=None, max_length=254)
    role: Role | None = None


class PasswordChange(BaseModel):
    """The current and the new password."""

    old_password: str
    new_password: str = Field(min_length=8, max_length=1024)


class PasswordReset(BaseModel):
    """A new password set by an admin."""

    new_password: str = Field(min_length=8, max_length=1024)


def load_user(services: Services, viewer: Viewer, user_id: str) -> dict[str, Any]:
    """A user row the viewer may see (admins: anyone; others: themselves). Raises NotFound."""
    if viewer["role"] != "admin" and viewer["id"] != user_id:
        raise NotFound(f"no user {user_id}")
    with services.engine.connect() as conn:
        row = conn.execute(select(t.users).where(t.users.c.id == user_id)).mappings().first()
    if row is None:
        raise NotFound(f"no user {user_id}")
    return dict(row)


def _list(
    request: Request,
    services: Services,
    user: Viewer,
    params: PageParams,
    search: str | None,
    role: str | None,
    is_active: bool | None,
) -> dict[str, Any]:
    stmt = select(t.users)
    if user["role"] != "admin":
        stmt = stmt.where(t.users.c.id == user["id"])
    matches = search_filter(search, [t.users.c.username, t.users.c.email])
    if matches is not None:
        stmt = stmt.where(matches)
    if role:
        stmt = stmt.where(t.users.c.role == role)
    if is_active is not None:
        stmt = stmt.where(t.users.c.is_active.is_(is_active))
    with services.engine.connect() as conn:
        return paginate(request, conn, stmt.order_by(t.users.c.created_at.desc(), t.users.c.id), params, profile_json)


@users.get("/", dependencies=[ReadPosition], response_model=None, responses=ok(Page[Profile]))
def list_users(
    request: Request,
    services: ServicesDep,
    user: CurrentUser,
    params: Annotated[PageParams, Depends(page_params)],
    search: str | None = None,
    role: Role | None = None,
    is_active: bool | None = None,
) -> dict[str, Any]:
    """Every user (admins). Filters ``?search=`` (username, email), ``?role=``, ``?is_active=``."""
    require_admin(user.actor, "user management")
    return _list(request, services, user, params, search, role, is_active)


@users.post("/", status_code=201, response_model=None, responses={**ok(Profile, 201), **ACCEPTED})
async def create_user(body: UserIn, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Create a user with a role (admins)."""
    cmd = CreateUser(body.username, body.password, body.role, body.email)
    user_id, position = await services.command(services.platform.create_user, cmd, ctx)
    return await created(
        services, position, f"/api/users/{user_id}/", str(user_id), lambda: profile_json(load_user(services, user, str(user_id)))
    )


@users.get("/{user_id}/", response_model=None, responses=ok(Profile), dependencies=[ReadPosition])
def get_user(user_id: UUID, services: ServicesDep, user: CurrentUser) -> dict[str, Any]:
    """One user (admins)."""
    require_admin(user.actor, "user management")
    return profile_json(load_user(services, user, str(user_id)))


async def _patch(user_id: UUID, body: UserPatch, services: Services, ctx: Context, user: Viewer, *, management: bool) -> Response:
    cmd = UpdateUser(user_id, body.email, body.role, management=management)
    position = await services.command(services.platform.update_user, cmd, ctx)
    return await after_write(services, position, lambda: profile_json(load_user(services, user, str(user_id))))


@users.patch("/{user_id}/", response_model=None, responses={**ok(Profile), **LAGGING})
async def update_user(user_id: UUID, body: UserPatch, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Change a user's email or role (admins)."""
    return await _patch(user_id, body, services, ctx, user, management=True)


@users.post("/{user_id}/deactivate/", response_model=None, responses={**ok(Profile), **LAGGING})
async def deactivate_user(user_id: UUID, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Deactivate a user (admins): their tokens and logins answer 401 from now on."""
    position = await services.command(services.platform.deactivate_user, DeactivateUser(user_id), ctx)
    return await after_write(services, position, lambda: profile_json(load_user(services, user, str(user_id))))


@users.post("/{user_id}/reactivate/", response_model=None, responses={**ok(Profile), **LAGGING})
async def reactivate_user(user_id: UUID, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Reactivate a user (admins); tokens issued before stay revoked."""
    position = await services.command(services.platform.reactivate_user, ReactivateUser(user_id), ctx)
    return await after_write(services, position, lambda: profile_json(load_user(services, user, str(user_id))))


@users.post("/{user_id}/password/", status_code=204, response_class=Response, responses=LAGGING)
async def reset_password(user_id: UUID, body: PasswordReset, services: ServicesDep, ctx: CommandCtx) -> Response:
    """Set a user's password (admins); every session of theirs ends."""
    position = await services.command(services.platform.reset_password, ResetPassword(user_id, body.new_password), ctx)
    return await after_write(services, position)


@profiles.get("/", dependencies=[ReadPosition], response_model=None, responses=ok(Page[Profile]))
def list_profiles(
    request: Request,
    services: ServicesDep,
    user: CurrentUser,
    params: Annotated[PageParams, Depends(page_params)],
    search: str | None = None,
) -> dict[str, Any]:
    """Profiles the user may see: admins every one, others their own."""
    return _list(request, services, user, params, search, None, None)


@profiles.get("/me/", response_model=None, responses=ok(Profile), dependencies=[ReadPosition])
def my_profile(user: CurrentUser) -> dict[str, Any]:
    """The caller's profile."""
    return profile_json(user)


@profiles.post("/me/password/", status_code=204, response_class=Response, responses=LAGGING)
async def change_password(body: PasswordChange, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Change one's own password; the user's other sessions stop working."""
    cmd = ChangePassword(body.old_password, body.new_password, kept_session=user.session)
    position = await services.command(services.platform.change_password, cmd, ctx)
    return await after_write(services, position)


@profiles.get("/{user_id}/", response_model=None, responses=ok(Profile), dependencies=[ReadPosition])
def get_profile(user_id: UUID, services: ServicesDep, user: CurrentUser) -> dict[str, Any]:
    """A profile (one's own, or any for admins)."""
    return profile_json(load_user(services, user, str(user_id)))


@profiles.patch("/{user_id}/", response_model=None, responses={**ok(Profile), **LAGGING})
async def update_profile(user_id: UUID, body: UserPatch, services: ServicesDep, ctx: CommandCtx, user: CurrentUser) -> Response:
    """Change a profile's email (one's own), or email and role (admins)."""
    return await _patch(user_id, body, services, ctx, user, management=False)
