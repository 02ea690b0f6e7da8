"""The login guard's pure parts and signed links, without services."""

from __future__ import annotations

import ipaddress
import time

import jwt
import pytest

from api.auth import TokenIssuer
from api.signing import UrlSigner
from api.throttle import PasswordChecks, client_address, user_delay
from commands.errors import Unauthenticated

TRUSTED = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8")]


def test_the_username_slowdown_starts_after_ten_failures_and_stays_within_thirty_seconds() -> None:
    assert [user_delay(n) for n in (0, 9, 10, 11, 12, 14, 15, 1000)] == [0, 0, 1, 2, 4, 16, 30, 30]


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    assert client_address("203.0.113.9", "198.51.100.1", TRUSTED) == "203.0.113.9"  # untrusted peer
    assert client_address("127.0.0.1", None, TRUSTED) == "127.0.0.1"
    assert client_address("127.0.0.1", "198.51.100.1", TRUSTED) == "198.51.100.1"
    # the right-most entry that is not a trusted proxy; a client cannot prepend its way out
    assert client_address("127.0.0.1", "6.6.6.6, 198.51.100.1, 10.1.2.3", TRUSTED) == "198.51.100.1"
    assert client_address("127.0.0.1", "garbage, 10.1.2.3", TRUSTED) == "10.1.2.3"
    assert client_address("::ffff:127.0.0.1", "2001:db8::1", TRUSTED) == "2001:db8::1"
    assert client_address(None, "198.51.100.1", TRUSTED) == "unknown"


def test_password_check_slots_refuse_at_once_beyond_the_limit() -> None:
    checks = PasswordChecks(2)
    assert checks.acquire() and checks.acquire()
    assert not checks.acquire()
    checks.release()
    assert checks.acquire()
    assert checks.metric._value.get() == 3


def test_signed_links_are_bound_to_a_user_and_any_signature_string_is_safe() -> None:
    signer = UrlSigner("k" * 40)
    link = signer.for_user({"id": "u1"})("/api/jobs/j/files/input_file/")
    query = dict(part.split("=") for part in link.split("?")[1].split("&"))
    signer.verify("/api/jobs/j/files/input_file/", int(query["exp"]), "u1", query["sig"])
    for uid, sig in [("u2", query["sig"]), ("u1", "é" * 32), ("u1", "\x00" * 32), ("u1", ""), ("u1", query["sig"] + "0")]:
        with pytest.raises(Unauthenticated):
            signer.verify("/api/jobs/j/files/input_file/", int(query["exp"]), uid, sig)


def test_tokens_without_iat_or_with_wrong_typed_claims_are_invalid() -> None:
    issuer = TokenIssuer("k" * 40)
    now = int(time.time())
    good = {"sub": "u1", "type": "access", "exp": now + 60, "iat": now, "jti": "j1", "rid": "r1"}
    assert issuer.decode(jwt.encode(good, "k" * 40), "access")["sub"] == "u1"
    for bad in [
        {k: v for k, v in good.items() if k != "iat"},
        {k: v for k, v in good.items() if k != "jti"},
        {**good, "sub": 7},
        {**good, "rid": {"a": 1}},
        {**good, "iat_us": 1.5},
        {**good, "iat": True},
        {**good, "type": ["access"]},
    ]:
        with pytest.raises(Unauthenticated, match="invalid"):
            issuer.decode(jwt.encode(bad, "k" * 40), "access")


def test_a_rotated_pair_keeps_its_session() -> None:
    issuer = TokenIssuer("k" * 40)
    first = issuer.pair({"id": "u1", "username": "a", "role": "editor"})
    session = issuer.decode(first["refresh"], "refresh")["rid"]
    second = issuer.pair({"id": "u1", "username": "a", "role": "editor"}, session)
    refresh = issuer.decode(second["refresh"], "refresh")
    assert refresh["rid"] == issuer.decode(second["access"], "access")["rid"] == session != refresh["jti"]
