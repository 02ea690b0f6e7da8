"""The client's session: the credentials file, logging in, and authenticated requests
that refresh the rotating tokens under a file lock (see :mod:`infra.client`)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

COMPLETED, FAILED, USAGE, CANCELLED = 0, 1, 2, 130
FINISHED = ("completed", "failed", "cancelled")
EXIT_OF = {"completed": COMPLETED, "failed": FAILED, "cancelled": CANCELLED}
REFRESH_MARGIN_S = 30
"""An access token expiring within this many seconds is refreshed before it is used."""
CANCEL_WAIT_S = 15
"""After Ctrl-C and "y": how long to wait for a running job to stop (it stops at its next
checkpoint, within about 2 s) before exiting anyway."""


class ClientError(Exception):
    """A one-line reason for the user; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


def config_dir() -> Path:
    """The user's aiorch config folder (created 0700)."""
    from platformdirs import user_config_dir

    path = Path(user_config_dir("aiorch", appauthor=False))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def credentials_path() -> Path:
    """``<config folder>/credentials.json``."""
    return config_dir() / "credentials.json"


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically, mode 0600 from the first byte."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".credentials-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _problem(resp: httpx.Response) -> str:
    """The ``detail`` of a problem+json answer (else its text), one line."""
    try:
        body = resp.json()
        detail = body.get("detail") if isinstance(body, dict) else None
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors:
            detail = f"{detail}: " + "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in errors)
        text = str(detail or body)
    except ValueError:
        text = resp.text
    return f"{resp.status_code} {text.strip().splitlines()[0] if text.strip() else resp.reason_phrase}"[:500]


def _expiry(token: str) -> float:
    """The ``exp`` claim of a JWT (not verified: only to know when to refresh), else 0."""
    try:
        payload = token.split(".")[1]
        return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return 0.0


def login(url: str, username: str, password: str) -> Path:
    """``POST /api/token/`` and keep the tokens; returns the credentials file.

    Raises:
        ClientError: the server is unreachable or refuses the credentials.
    """
    url = url.rstrip("/")
    try:
        resp = httpx.post(f"{url}/api/token/", json={"username": username, "password": password}, timeout=30)
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach {url}: {exc}") from None
    if resp.status_code != 200:
        raise ClientError(f"login refused: {_problem(resp)}")
    tokens = resp.json()
    path = credentials_path()
    from filelock import FileLock

    with FileLock(str(path) + ".lock"):
        _write_private(path, {"url": url, "username": username, "access": tokens["access"], "refresh": tokens["refresh"]})
    return path


class Session:
    """An authenticated connection to the server the user logged in to.

    Every request carries the access token; one about to expire, or answered 401, is
    refreshed (under the file lock) and the request sent once more.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or credentials_path()
        try:
            self.creds: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise ClientError("not logged in: run `aiorch login URL` first", USAGE) from None
        except ValueError:
            raise ClientError(f"{self.path} is not valid JSON: run `aiorch login URL` again", USAGE) from None
        self.url: str = self.creds["url"]
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.http.close()

    @property
    def access(self) -> str:
        """The access token, refreshed first when it expires within :data:`REFRESH_MARGIN_S`."""
        if _expiry(self.creds["access"]) - time.time() < REFRESH_MARGIN_S:
            self.refresh(self.creds["access"])
        return str(self.creds["access"])

    def refresh(self, used: str) -> None:
        """New tokens for the access token ``used``: adopt the file's if another process already
        rotated them, else ``POST /api/token/refresh/`` and write the answer.

        Raises:
            ClientError: the session is over (logged out, revoked, expired).
        """
        from filelock import FileLock

        with FileLock(str(self.path) + ".lock", timeout=60):
            try:
                current = json.loads(self.path.read_text())
            except (FileNotFoundError, ValueError):
                raise ClientError("not logged in: run `aiorch login URL` first", USAGE) from None
            if current.get("access") != used and current.get("url") == self.url:
                self.creds = current
                return
            resp = self.http.post("/api/token/refresh/", json={"refresh": current["refresh"]})
            if resp.status_code != 200:
                raise ClientError(f"the session has ended ({_problem(resp)}): run `aiorch login {self.url}` again")
            tokens = resp.json()
            current.update(access=tokens["access"], refresh=tokens["refresh"])
            _write_private(self.path, current)
            self.creds = current

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """``method path`` with the Bearer token (refreshed once on 401).

        Raises:
            ClientError: the server cannot be reached.
        """
        try:
            token = self.access
            resp = self.http.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)
            if resp.status_code == 401:
                self.refresh(token)
                resp = self.http.request(method, path, headers={"Authorization": f"Bearer {self.access}"}, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}") from None
        return resp

    def json(self, method: str, path: str, ok: tuple[int, ...] = (200, 201, 202), **kwargs: Any) -> Any:
        """The JSON answer of ``method path``; a status outside ``ok`` → :class:`ClientError`
        (exit 2 for 400/415/422, else 1)."""
        resp = self.request(method, path, **kwargs)
        if resp.status_code not in ok:
            raise ClientError(f"{method} {path}: {_problem(resp)}", USAGE if resp.status_code in (400, 415, 422) else FAILED)
        return resp.json()

    def logout(self) -> None:
        """``POST /api/token/logout/`` and forget the tokens (also when the server is gone)."""
        with contextlib.suppress(httpx.HTTPError):
            self.http.post("/api/token/logout/", json={"refresh": self.creds["refresh"]})
        self.path.unlink(missing_ok=True)
