"""Refresh-token rotation (API.md *Auth and users*): a session is the family of rotated
refresh tokens. Each refresh token may be rotated once: its ``jti`` is recorded in
``refresh_rotations`` by one atomic insert, so of two concurrent uses only one succeeds.
Presented again within :data:`REUSE_GRACE_S` of its rotation (two tabs racing) it is refused
with nothing revoked; later, the reuse means the token was stolen and the family is revoked
(by the caller, through the platform's ``log_out``)."""

from __future__ import annotations

import random
from enum import Enum
from typing import Any

from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, delete, exists, func, literal, select
from sqlalchemy.dialects.postgresql import insert

from projections import tables as t

metadata = MetaData()

refresh_rotations = Table(
    "refresh_rotations",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("family", String(64), nullable=False),
    Column("rotated_at", DateTime(timezone=True), nullable=False, server_default=func.now(), index=True),
)

#: the label of the "session logged out" column of :func:`token_holder`'s row
_REVOKED = "aiorch_session_revoked"

#: seconds after a rotation during which the old refresh token is refused without revoking
REUSE_GRACE_S = 10.0


class Rotation(Enum):
    """What presenting a refresh token did."""

    ROTATED = "rotated"  # first use: a new pair is issued
    RACED = "raced"  # used again within the grace: 401, nothing revoked
    REUSED = "reused"  # used again later: 401, revoke the family


def rotate(engine: Engine, jti: str, family: str, keep_s: float) -> Rotation:
    """Record the rotation of refresh token ``jti`` of session ``family``; rows older than
    ``keep_s`` seconds (the refresh tokens' lifetime) are swept now and then."""
    c = refresh_rotations.c
    with engine.begin() as conn:
        inserted = conn.execute(
            insert(refresh_rotations).values(jti=jti, family=family).on_conflict_do_nothing().returning(c.jti)
        ).first()
        if inserted is None:
            age = conn.execute(
                select(func.extract("epoch", func.clock_timestamp() - c.rotated_at)).where(c.jti == jti)
            ).scalar_one()
            return Rotation.RACED if float(age) <= REUSE_GRACE_S else Rotation.REUSED
    if random.random() < 1 / 64:  # not for security: how often old rows are swept
        with engine.begin() as conn:
            conn.execute(
                delete(refresh_rotations).where(c.rotated_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, keep_s))
            )
    return Rotation.ROTATED


def was_rotated(engine: Engine, jti: str) -> bool:
    """Whether refresh token ``jti`` was already rotated (so it is spent)."""
    with engine.connect() as conn:
        return conn.execute(select(refresh_rotations.c.jti).where(refresh_rotations.c.jti == jti)).first() is not None


def token_holder(engine: Engine, user_id: str, session: str | None) -> tuple[dict[str, Any] | None, bool]:
    """The user row of a token's ``sub`` and whether its ``session`` was logged out, in one
    indexed round trip (both tables by primary key): ``(row or None, revoked)``.

    The token check (``api.deps.check_token``) runs this on every request, against the
    read models shared by every API process, with no cache: a logout, password change or
    deactivation answers once the read models include it (read your writes), and from that
    moment no API process accepts the old token.
    """
    u, r = t.users, t.revoked_sessions
    revoked = exists().where(r.c.session == session) if session is not None else literal(False)
    with engine.connect() as conn:
        row = conn.execute(select(u, revoked.label(_REVOKED)).where(u.c.id == user_id)).mappings().first()
    if row is None:
        return None, False
    user = dict(row)
    return user, bool(user.pop(_REVOKED))
