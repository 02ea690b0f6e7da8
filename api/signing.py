"""Short-lived signed download links (``?exp=&uid=&sig=``), so ``<audio>`` and ``<video>``
tags work without a Bearer header. HMAC-SHA256 over the path, the expiry time and the id of
the user the link was given to; the download then acts as that user (see
``api.deps.link_user``), so it stops once the user is deactivated or loses sight of the file."""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from commands.errors import Unauthenticated

SIG_LEN = 32


class UrlSigner:
    """Signs paths with ``secret``; links live ``ttl_s`` seconds (default one hour)."""

    def __init__(self, secret: str, ttl_s: int = 3600) -> None:
        self._key = hashlib.sha256(b"aiorch-download:" + secret.encode()).digest()
        self.ttl_s = ttl_s

    def _sig(self, path: str, exp: int, user_id: str) -> str:
        message = f"{path}\n{exp}\n{user_id}".encode("utf-8", "replace")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:SIG_LEN]

    def sign(self, path: str, user_id: str) -> str:
        """``path?exp=<unix time>&uid=<user id>&sig=<hex>``, a link for user ``user_id``."""
        exp = int(time.time()) + self.ttl_s
        return f"{path}?exp={exp}&uid={quote(user_id, safe='')}&sig={self._sig(path, exp, user_id)}"

    def for_user(self, user: Any) -> Callable[[str], str]:
        """``sign(path)`` for links given to ``user`` (a row with ``id``)."""
        return functools.partial(self.sign, user_id=str(user["id"]))

    def verify(self, path: str, exp: int, user_id: str, sig: str) -> None:
        """Raises Unauthenticated unless ``sig`` signs ``path`` for ``user_id`` and ``exp`` is
        in the future. Any string is safe here (non-ASCII or odd lengths are refused)."""
        if exp < time.time():
            raise Unauthenticated("the download link has expired")
        if len(sig) != SIG_LEN or not sig.isascii() or not hmac.compare_digest(self._sig(path, exp, user_id), sig):
            raise Unauthenticated("the download link is invalid")
