"""Short-lived signed download links (``?exp=&sig=``), so ``<audio>`` and ``<video>`` tags
work without a Bearer header. HMAC-SHA256 over the path and the expiry time."""

from __future__ import annotations

import hashlib
import hmac
import time

from commands.errors import Unauthenticated


class UrlSigner:
    """Signs paths with ``secret``; links live ``ttl_s`` seconds (default one hour)."""

    def __init__(self, secret: str, ttl_s: int = 3600) -> None:
        self._key = hashlib.sha256(b"aiorch-download:" + secret.encode()).digest()
        self.ttl_s = ttl_s

    def _sig(self, path: str, exp: int) -> str:
        return hmac.new(self._key, f"{path}\n{exp}".encode(), hashlib.sha256).hexdigest()[:32]

    def sign(self, path: str) -> str:
        """``path?exp=<unix time>&sig=<hex>``."""
        exp = int(time.time()) + self.ttl_s
        return f"{path}?exp={exp}&sig={self._sig(path, exp)}"

    def verify(self, path: str, exp: int, sig: str) -> None:
        """Raises Unauthenticated unless ``sig`` signs ``path`` and ``exp`` is in the future."""
        if exp < time.time():
            raise Unauthenticated("the download link has expired")
        if not hmac.compare_digest(self._sig(path, exp), sig):
            raise Unauthenticated("the download link is invalid")
