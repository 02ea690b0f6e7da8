"""Tokens and blob storage, without services."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest

from api.auth import TokenIssuer
from commands.errors import PayloadTooLarge, Unauthenticated
from commands.security import hash_password, verify_password
from infra.blobs import LocalBlobStore

USER = {"id": "u1", "username": "alice", "role": "editor"}


def test_token_pair_roundtrip_and_kinds() -> None:
    issuer = TokenIssuer("k" * 40)
    pair = issuer.pair(USER)
    assert issuer.decode(pair["access"], "access")["sub"] == "u1"
    with pytest.raises(Unauthenticated):
        issuer.decode(pair["refresh"], "access")  # a refresh token is no access token
    new_access = issuer.access_from_refresh(pair["refresh"], USER)
    assert issuer.decode(new_access, "access")["rid"] == issuer.decode(pair["refresh"], "refresh")["jti"]


def test_tampered_and_expired_tokens_are_refused() -> None:
    issuer = TokenIssuer("k" * 40, access_ttl_s=-1)
    with pytest.raises(Unauthenticated, match="expired"):
        issuer.decode(issuer.pair(USER)["access"], "access")
    forged = jwt.encode({"sub": "u1", "type": "access", "exp": int(time.time()) + 60}, "other-key-" * 4, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="invalid"):
        TokenIssuer("k" * 40).decode(forged, "access")


def test_password_hashes() -> None:
    h = hash_password("correct horse")
    assert h.startswith("$argon2id$")
    assert verify_password(h, "correct horse")
    assert not verify_password(h, "wrong")
    assert not verify_password(None, "anything")


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def test_blobs_stream_hash_sniff_and_stay_inside_root(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    wav_head = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 100
    blob = asyncio.run(store.save_stream(chunks(wav_head[:10], wav_head[10:]), "../../etc/passwd.wav", max_bytes=1000))
    assert blob.content_type == "audio/wav" and blob.size == len(wav_head)
    assert store.path(blob.key).is_relative_to(store.root) and blob.name == "passwd.wav"
    with pytest.raises(ValueError):
        store.path("../outside")
    with pytest.raises(PayloadTooLarge):
        asyncio.run(store.save_stream(chunks(b"x" * 600, b"x" * 600), "big.bin", max_bytes=1000))
    assert [p.name for p in store.root.rglob("*") if p.is_file()] == ["passwd.wav"]
