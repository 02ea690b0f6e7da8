"""Refresh-token rotation (API.md *Auth and users*): a session is the family of rotated
refresh tokens. Each refresh token may be rotated once: its ``jti`` is recorded in
``refresh_rotations`` by one atomic insert, so of two concurrent uses only one succeeds.
Presented again within :data:`REUSE_GRACE_S` of its rotation (two tabs racing) it is refused
with nothing revoked; later, the reuse means the token was stolen and the family is revoked
(by the caller, through the platform's ``log_out``)."""

from __future__ import annotations

import random
from enum import Enum

from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, delete, func, select
from sqlalchemy.dialects.postgresql import insert

metadata = MetaData()

refresh_rotations = Table(
    "refresh_rotations",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("family", String(64), nullable=False),
    Column("rotated_at", DateTime(timezone=True), nullable=False, server_default=func.now(), index=True),
)

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
