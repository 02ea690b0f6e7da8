"""Authentication and profiles: credentials, tokens, the user's profile."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field

from api.schemas.enums import Role
from commands.text import Line


class Credentials(BaseModel):
    """Username and password (a username holds no control character: 422)."""

    username: Line = Field(min_length=1, max_length=150, examples=["alice"])
    password: str = Field(min_length=1, max_length=1024, examples=["s3cret-pass"])


class TokenPair(BaseModel):
    """An access token (short-lived) and a refresh token."""

    access: str
    refresh: str


class RefreshBody(BaseModel):
    """A refresh token."""

    refresh: str


class AccessToken(BaseModel):
    """A new access token."""

    access: str


class VerifyBody(BaseModel):
    """Any token to check."""

    token: str


class Profile(BaseModel):
    """A user's profile."""

    id: UUID
    username: str
    email: str | None
    role: Role
    is_active: bool
    created_at: datetime
