"""FastAPI dependencies: the system's parts, the current user, read-your-writes waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, select

from api.auth import TokenIssuer, session_of
from api.errors import ConflictAt, ServiceUnavailable, request_id
from api.sessions import token_holder
from api.signing import UrlSigner
from api.throttle import LoginGuard
from commands.context import Actor, Context
from commands.errors import Unauthenticated
from commands.service import Platform
from projections import tables as t
from projections.history import JobCheckpoints
from projections.projector import current_position

T = TypeVar("T")


class StoredFile(Protocol):
    """A stored blob as :class:`BlobStore` reports it."""

    @property
    def key(self) -> str: ...
    @property
    def content_type(self) -> str: ...
    def describe(self) -> dict[str, object]: ...


class BlobStore(Protocol):
    """Blob storage as the API uses it: ``infra.blobs.LocalBlobStore`` on a local folder or
    ``infra.s3blobs.S3BlobStore`` on S3-compatible object storage. Keys look like
    ``uploads/<uuid>/<name>``.

    - ``save_stream(chunks, name, max_bytes=, accept=)`` stores an async stream of bytes under
      a new key and returns its :class:`StoredFile` (``describe()`` →
      ``{blob, name, size, content_type, sha256}``). It raises PayloadTooLarge the moment
      more than ``max_bytes`` arrived; ``accept(content_type)`` is called with the type sniffed
      from the first 8 KiB before the rest is stored, and may raise to refuse it. Whatever
      fails, nothing of that blob stays stored.
    - ``local_path(key)`` is the blob's local file, served as a file (None when the store is
      remote or the blob is gone); ``size(key)`` its bytes (None if not stored);
      ``iter_range(key, start, end)`` streams bytes ``start..end`` inclusive; ``delete(key)``
      removes it if present. A key that would escape the store raises ValueError.
    """

    async def save_stream(
        self,
        chunks: AsyncIterable[bytes],
        name: str,
        *,
        max_bytes: int,
        accept: Callable[[str], None] | None = None,
        prefix: str = ...,
    ) -> StoredFile: ...
    def local_path(self, key: str) -> Path | None: ...
    def size(self, key: str) -> int | None: ...
    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]: ...
    def delete(self, key: str) -> None: ...


class Services:
    """The parts the API uses, handed over by the composition root (``infra.roles``); every
    part may be given at construction (``hub``, ``reads``, ``login_guard`` and the health
    checks too, which default to none and a default login guard)."""

    def __init__(
        self,
        platform: Platform,
        engine: Engine,
        blobs: BlobStore,
        tokens: TokenIssuer,
        *,
        read_wait_s: float,
        max_upload_bytes: int,
        catalog: Any,
        signer: UrlSigner,
        effective_settings: Any,
        public_url: str | None = None,
        login_guard: LoginGuard | None = None,
        broker_check: Callable[[], str] | None = None,
        processors_check: Callable[[], Any] | None = None,
        hub: Any = None,
        reads: Any = None,
    ) -> None:
        self.platform, self.engine, self.blobs, self.tokens = platform, engine, blobs, tokens
        self.read_wait_s, self.max_upload_bytes, self.catalog = read_wait_s, max_upload_bytes, catalog
        self.signer, self.effective_settings = signer, effective_settings
        self.public_url = public_url  # AIORCH_PUBLIC_URL; https turns on HSTS
        self.broker_check = broker_check  # "ok" or why the broker is unreachable
        self.processors_check = processors_check
        self.hub = hub  # api.live.LiveHub
        self.reads = reads  # api.readwait.ReadWaiter
        self._head_seen = 0  # the highest store head read so far (positions only increase)
        self.login_guard = login_guard or LoginGuard(engine)
        self.checkpoints = JobCheckpoints()  # ?as_of= folds from the nearest remembered job row

    def upload_limit(self, user_id: str) -> int:
        """Bytes one uploaded file may have: the user's ``max_file_size_mb`` (1 MB = 1,048,576
        bytes), never above the deployment's ``AIORCH_MAX_UPLOAD_BYTES``."""
        mb = self.effective_settings(user_id).get("max_file_size_mb") or 0
        return min(int(mb * 1024 * 1024) or self.max_upload_bytes, self.max_upload_bytes)

    def projected_position(self) -> int:
        """The read models' position."""
        with self.engine.connect() as conn:
            return current_position(conn)

    def wait_for(self, position: int, timeout: float | None = None) -> bool:
        """Block (≤ ``timeout``, default ``read_wait_s``) until the read models reach
        ``position``; True if they did. For threads: async code uses :meth:`await_position`."""
        if self.reads is not None:
            return bool(self.reads.wait_sync(position, self.read_wait_s if timeout is None else timeout))
        deadline = time.monotonic() + (self.read_wait_s if timeout is None else timeout)
        delay = 0.002
        while True:
            if self.projected_position() >= position:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    async def await_position(self, position: int, timeout: float | None = None) -> bool:
        """Wait (≤ ``timeout``, default ``read_wait_s``) until the read models reach
        ``position``, holding no thread (woken by the projector's NOTIFY); True if they did."""
        timeout = self.read_wait_s if timeout is None else timeout
        if self.reads is not None:
            return bool(await self.reads.wait(position, timeout))
        return await asyncio.to_thread(self.wait_for, position, timeout)

    async def command(self, handler: Callable[..., T], *args: Any) -> T:
        """Run the command ``handler(*args)`` in a worker thread and return its result.

        Raises:
            ServiceUnavailable: (503) the read waiter lost the database while the command
                ran — the API answers at once instead of riding the outage out inside the
                event store's retries. The command may still commit once the database is
                back; clients resend with an ``Idempotency-Key`` to learn whether it did.
            Whatever ``handler`` raises.
        """
        call = asyncio.to_thread(handler, *args)
        if self.reads is None:
            return await call
        result: T = await self.reads.unless_database_lost(call)
        return result

    async def beyond_head(self, position: int) -> int | None:
        """The store's head if ``position`` is beyond it (no write returned it), else None.
        The head is re-read from the store whenever ``position`` is above the last one
        seen, so a position another API process just returned is never refused."""
        if position <= self._head_seen or (self.reads is not None and self.reads.reached(position)):
            return None
        head = int(await asyncio.to_thread(self.platform.head))
        self._head_seen = max(self._head_seen, head)
        return head if position > head else None


def get_services(request: Request) -> Services:
    """The :class:`Services` of this app."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
#: ``request.state`` attribute: ``(token, claims, user row)`` of an access token this request
#: already passed through :func:`check_token` (api.limits checks it before reading a body)
CHECKED_TOKEN = "checked_access"  # noqa: S105 - an attribute name, not a secret
bearer = HTTPBearer(auto_error=False, description="an access token from POST /api/token/")


def check_token(services: Services, token: str, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode ``token`` and check it against the read models: the user exists and is
    active, its session was not logged out, and it was issued after the user's last
    password change (except the session kept by that change).

    Returns (claims, user row). Raises Unauthenticated (401).
    """
    claims = services.tokens.decode(token, kind)  # well-formed: sub, jti, iat present and typed
    session = session_of(claims)
    row, revoked = token_holder(services.engine, claims["sub"], session)  # one round trip, no cache
    if row is None or not row["is_active"]:
        raise Unauthenticated("the user is unknown or inactive")
    if revoked:
        raise Unauthenticated("the session was logged out")
    valid_after = row["tokens_valid_after"]
    issued_us = claims.get("iat_us", claims["iat"] * 1_000_000)
    if valid_after is not None and issued_us < valid_after.timestamp() * 1_000_000 and session != row["kept_session"]:
        raise Unauthenticated("the token was revoked by a password change or reactivation")
    return claims, row


class SignedInUser(BaseModel):
    """The user a request acts as: their read-model profile, the session of their token, and
    the :class:`~commands.context.Actor` their commands carry. Frozen.

    ``user["id"]`` (read-only mapping access) serves helpers that take a user row too."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    username: str
    role: str
    email: str | None = None
    is_active: bool = True
    created_at: datetime | None = None
    session: str | None = None

    @property
    def actor(self) -> Actor:
        """The actor of this user's commands."""
        return Actor(id=self.id, username=self.username, role=self.role)

    @property
    def is_admin(self) -> bool:
        """Whether the user is an admin."""
        return self.role == "admin"

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        """``user[key]``, or ``default`` for a field it does not have."""
        return getattr(self, key, default)


def current_user(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> SignedInUser:
    """The authenticated user. Raises Unauthenticated (401)."""
    if credentials is None:
        raise Unauthenticated("authentication credentials were not provided")
    checked = getattr(request.state, CHECKED_TOKEN, None)  # api.limits checked it before the body
    if checked is not None and checked[0] == credentials.credentials:
        claims, row = checked[1], checked[2]
    else:
        claims, row = check_token(services, credentials.credentials, "access")
    user = SignedInUser.model_validate({**row, "session": claims.get("rid")})
    request.state.user = user
    return user


CurrentUser = Annotated[SignedInUser, Depends(current_user)]


def link_user(services: Services, path: str, exp: int, user_id: str, sig: str) -> dict[str, Any]:
    """The user a signed download link was given to: the signature and expiry hold and the
    user exists and is active. The download then acts as this user (what they may see).

    Raises Unauthenticated (401).
    """
    services.signer.verify(path, exp, user_id, sig)
    with services.engine.connect() as conn:
        row = conn.execute(select(t.users).where(t.users.c.id == user_id)).mappings().first()
    if row is None or not row["is_active"]:
        raise Unauthenticated("the link's user is unknown or inactive")
    return dict(row)


def command_context(request: Request, user: CurrentUser) -> Context:
    """The actor and correlation id (the request id) of a command sent by this request."""
    return Context(actor=user.actor, correlation_id=request_id(request))


CommandCtx = Annotated[Context, Depends(command_context)]


async def read_position(
    services: ServicesDep,
    min_position: Annotated[int | None, Query(ge=0, description="wait until the read models reach this position")] = None,
    aiorch_min_position: Annotated[int | None, Header(ge=0)] = None,
) -> None:
    """Read your writes: wait (≤ ``AIORCH_READ_WAIT_S``, holding no thread) for
    ``?min_position`` / header ``Aiorch-Min-Position``.

    Raises Conflict (409, at once) for a position beyond the store's head, naming the head;
    ServiceUnavailable (503 with Retry-After) when the read models lag behind.
    """
    wanted = max(min_position or 0, aiorch_min_position or 0)
    if not wanted:
        return
    head = await services.beyond_head(wanted)
    if head is not None:
        loc = ["query", "min_position"] if min_position == wanted else ["header", "aiorch-min-position"]
        raise ConflictAt(
            f"position {wanted} is beyond the store's head {head}: no write returned it",
            errors=[{"loc": loc, "msg": f"beyond the head {head}"}],
        )
    if not await services.await_position(wanted):
        raise ServiceUnavailable(f"the read models have not reached position {wanted} yet", retry_after=1)


ReadPosition = Depends(read_position)


async def created(services: Services, position: int, location: str, resource_id: str, fetch: Any) -> JSONResponse:
    """201 with the resource once the read models show it, else 202 ``{id, position}``."""
    headers = {"Aiorch-Position": str(position), "Location": location}
    if await services.await_position(position):
        return JSONResponse(await asyncio.to_thread(fetch), status_code=201, headers=headers)
    return JSONResponse({"id": resource_id, "position": position}, status_code=202, headers=headers)


async def after_write(services: Services, position: int, fetch: Any = None, status_code: int = 200) -> Response:
    """Answer a write once the read models include ``position``: ``fetch()`` as JSON (or
    204 without ``fetch``), with ``Aiorch-Position``; 202 ``{position}`` if they lag."""
    headers = {"Aiorch-Position": str(position)}
    if not await services.await_position(position):
        return JSONResponse({"position": position}, status_code=202, headers=headers)
    if fetch is None:
        return Response(status_code=204, headers=headers)
    return JSONResponse(await asyncio.to_thread(fetch), status_code=status_code, headers=headers)
