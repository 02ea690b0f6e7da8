"""Secrets of a deployment: the JWT signing key and the key that encrypts provider API
keys at rest (Fernet: AES-128-CBC + HMAC-SHA256, from the ``cryptography`` package)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path

from cryptography.fernet import Fernet

from infra.settings import Settings


def _kept(settings: Settings, name: str, configured: str | None, what: str) -> str:
    """``configured``, else a random value generated once and kept in the data folder
    (development only). Raises RuntimeError in production without a configured value."""
    if configured:
        return configured
    if settings.environment == "production":
        raise RuntimeError(f"{what} must be set in production")
    path: Path = settings.data_dir / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{secrets.token_hex(4)}")
        tmp.write_text(secrets.token_urlsafe(48))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text().strip()


def secret_key(settings: Settings) -> str:
    """The JWT signing key (``AIORCH_SECRET_KEY``)."""
    return _kept(settings, "secret_key", settings.secret_key, "AIORCH_SECRET_KEY")


def fernet(settings: Settings) -> Fernet:
    """The cipher of provider API keys: ``AIORCH_ENCRYPTION_KEY`` (any string; a Fernet
    key is derived from it with SHA-256)."""
    material = _kept(settings, "encryption_key", settings.encryption_key, "AIORCH_ENCRYPTION_KEY")
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(material.encode()).digest()))
