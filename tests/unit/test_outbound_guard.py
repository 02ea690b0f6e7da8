"""The outbound-address guard (commands.outbound) on its own: pure, no network (names are
resolved only by injected resolvers)."""

from __future__ import annotations

import socket

import pytest

from api.errors import problem_errors, problem_kind
from commands.errors import InvalidCommand
from commands.outbound import (
    OutboundRefused,
    address_refusal,
    check_url,
    parse_networks,
    resolve_host,
)


def never(host: str, port: int) -> list[str]:
    raise AssertionError(f"the guard resolved {host}:{port} although it must not")


def fixed(*addresses: str):
    seen: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        seen.append((host, port))
        return list(addresses)

    resolver.seen = seen  # type: ignore[attr-defined]
    return resolver


def refusal(url: str, **kwargs: object) -> OutboundRefused:
    with pytest.raises(OutboundRefused) as caught:
        check_url(url, **{"resolver": never, **kwargs})  # type: ignore[arg-type]
    return caught.value


@pytest.mark.parametrize(
    ("url", "phrase"),
    [
        ("http://127.0.0.1:9/v1", "loopback"),
        ("http://127.255.0.7/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://172.16.5.4/", "private"),
        ("http://192.168.1.20:8080/v1", "private"),
        ("http://[fd12:3456::1]/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "cloud-metadata"),
        ("http://[fd00:ec2::254]/", "cloud-metadata"),
        ("http://100.100.100.200/", "cloud-metadata"),
        ("http://169.254.10.10/", "link-local"),
        ("http://[fe80::1%25eth0]/", "link-local"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://240.0.0.1/", "address"),  # reserved
        ("http://100.64.0.1/", "non-public"),  # carrier-grade NAT
        ("http://192.0.2.10/", "address"),  # documentation
        ("http://[::ffff:127.0.0.1]/", "loopback"),  # IPv4-mapped
        ("http://[64:ff9b::a00:1]/", "private"),  # NAT64 of 10.0.0.1
        ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
        ("http://127.1/", "loopback"),  # legacy spellings that resolvers accept
        ("http://0x7f000001/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
    ],
)
def test_non_public_literal_addresses_are_refused_without_dns(url: str, phrase: str) -> None:
    exc = refusal(url)
    assert phrase in exc.reason
    assert isinstance(exc, InvalidCommand) and problem_kind(exc)[0] == 422
    assert problem_errors(exc) == [{"loc": ["body", "base_url"], "msg": exc.reason}]


@pytest.mark.parametrize(
    ("url", "phrase"),
    [
        ("ftp://example.org/v1", "http(s)"),
        ("file:///etc/passwd", "http(s)"),
        ("gopher://example.org/", "http(s)"),
        ("example.org/v1", "http(s)"),
        ("", "http(s)"),
        ("http:///v1", "host"),
        ("http://user:pass@example.org/", "user info"),
        ("http://example.org@127.0.0.1/", "user info"),
        ("http://exa mple.org/", "spaces"),
        ("http://example.org\\@127.0.0.1/", "backslashes"),
        ("http://example.org/\x00", "control"),
        ("http://example.org:99999/", "valid URL"),
        ("http://example.org:0/", "port"),
        ("http://exa_$mple.org/", "host name"),
        ("http://" + "a" * 2100 + ".org/", "2048"),
    ],
)
def test_malformed_urls_are_refused(url: str, phrase: str) -> None:
    assert phrase in refusal(url).reason


@pytest.mark.parametrize(
    "url",
    [
        "http://metadata/computeMetadata/v1/",
        "http://metadata.google.internal/",
        "http://METADATA.Google.Internal./",  # case and the trailing dot do not help
        "http://\u24dcetadata/",  # neither does a look-alike that IDNA maps to "metadata"
        "http://instance-data.ec2.internal/",
    ],
)
def test_metadata_names_are_refused_at_creation(url: str) -> None:
    assert "cloud-metadata service" in refusal(url).reason


def test_localhost_names_are_refused_unless_loopback_is_allowed() -> None:
    assert "loopback" in refusal("http://localhost:8000/v1").reason
    assert "loopback" in refusal("http://api.localhost/").reason
    assert check_url("http://localhost:8000/v1", allowed_networks=["127.0.0.0/8"], resolver=never).host == "localhost"


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "http://models.example.org:8080/v1/",
        "https://8.8.8.8/v1",
        "http://[2606:4700:4700::1111]/v1",
        "http://[::ffff:8.8.8.8]/",  # mapped public IPv4
        "HTTPS://API.Example.COM/v1",
    ],
)
def test_public_hosts_are_accepted_and_names_not_resolved_at_creation(url: str) -> None:
    target = check_url(url, resolver=never)
    assert target.scheme in ("http", "https")
    assert target.literal == (":" in target.host or target.host[0].isdigit())
    assert target.addresses == ((target.host,) if target.literal else ())


def test_target_fields() -> None:
    target = check_url("HTTPS://Models.Example.ORG./v1", resolver=never)
    assert (target.scheme, target.host, target.port, target.literal) == ("https", "models.example.org", 443, False)
    assert check_url("http://8.8.4.4/", resolver=never).port == 80
    assert check_url("http://8.8.4.4:8443/", resolver=never).port == 8443
    assert check_url("http://0x08080808/", resolver=never).host == "8.8.8.8"


def test_allowed_networks_admit_their_addresses_only() -> None:
    lan = ["192.168.10.0/24", "fd00:1234::/32"]
    assert check_url("http://192.168.10.5:8000/v1", allowed_networks=lan).addresses == ("192.168.10.5",)
    assert check_url("http://[fd00:1234::5]/v1", allowed_networks=lan).literal
    assert "private" in refusal("http://192.168.11.5/", allowed_networks=lan).reason
    assert "loopback" in refusal("http://127.0.0.1/", allowed_networks=lan).reason
    assert check_url("http://127.0.0.1:9/", allowed_networks=["127.0.0.0/8"]).host == "127.0.0.1"
    assert "::1" in refusal("http://[::1]/", allowed_networks=["127.0.0.0/8"]).reason


def test_metadata_addresses_stay_refused_inside_allowed_networks() -> None:
    assert "cloud-metadata" in refusal("http://169.254.169.254/", allowed_networks=["169.254.0.0/16"]).reason
    assert "cloud-metadata" in refusal("http://169.254.169.254/", allow_private=True).reason
    assert "cloud-metadata" in refusal("http://[::ffff:169.254.169.254]/", allow_private=True).reason
    assert check_url("http://10.1.2.3/", allow_private=True).host == "10.1.2.3"


def test_at_request_time_every_resolved_address_is_checked() -> None:
    public = fixed("93.184.216.34", "2606:2800:220:1::1")
    target = check_url("https://models.example.org/v1", resolve=True, resolver=public)
    assert target.addresses == ("93.184.216.34", "2606:2800:220:1::1")
    assert public.seen == [("models.example.org", 443)]  # type: ignore[attr-defined]

    mixed = fixed("93.184.216.34", "127.0.0.1")  # one bad address refuses the name
    exc = refusal("http://models.example.org/v1", resolve=True, resolver=mixed)
    assert exc.reason.startswith("resolves to a loopback address (127.0.0.1)")
    rebinding = fixed("169.254.169.254")
    assert "cloud-metadata" in refusal("http://models.example.org/", resolve=True, resolver=rebinding).reason


def test_request_time_allowed_networks_and_odd_resolver_answers() -> None:
    loopback = fixed("127.0.0.1")
    assert resolve_host("provider.test", 80, allowed_networks=["127.0.0.0/8"], resolver=loopback) == ("127.0.0.1",)
    assert "no address" in refusal("http://provider.test/", resolve=True, resolver=fixed()).reason
    assert "not an address" in refusal("http://provider.test/", resolve=True, resolver=fixed("not-an-ip")).reason
    with pytest.raises(OutboundRefused, match="cloud-metadata service"):
        resolve_host("metadata.google.internal", 80, resolver=never)
    assert resolve_host("8.8.8.8", 80, resolver=never) == ("8.8.8.8",)  # a literal needs no lookup


def test_resolution_failures_are_oserrors_for_the_caller_to_retry() -> None:
    def broken(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(OSError):
        check_url("http://models.example.org/", resolve=True, resolver=broken)


def test_field_name_and_address_refusal() -> None:
    exc = refusal("http://10.0.0.1/hook", field="url")
    assert problem_errors(exc) == [{"loc": ["body", "url"], "msg": exc.reason}] and exc.detail.startswith("url ")
    assert address_refusal("8.8.8.8") is None
    assert address_refusal("10.0.0.1", ["10.0.0.0/8"]) is None
    assert "private" in (address_refusal("10.0.0.1") or "")
    with pytest.raises(ValueError):
        address_refusal("example.org")


def test_parse_networks() -> None:
    assert [str(n) for n in parse_networks(["10.0.0.0/8", " 192.168.1.7/24 ", "", "fd00::/8", "127.0.0.1"])] == [
        "10.0.0.0/8",
        "192.168.1.0/24",
        "fd00::/8",
        "127.0.0.1/32",
    ]
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.0/33"])
    with pytest.raises(ValueError):
        check_url("http://8.8.8.8/", allowed_networks=["not a network"])


def test_pin_url_sends_to_the_checked_address_and_speaks_to_the_name() -> None:
    from commands.outbound import pin_url

    target = check_url("https://Models.Example.org:8443/v1", resolve=True, resolver=fixed("93.184.216.34", "2606:2800::1"))
    pinned = pin_url(target, "93.184.216.34", "https://models.example.org:8443/v1/chat/completions?x=1")
    assert pinned.url == "https://93.184.216.34:8443/v1/chat/completions?x=1"
    assert (pinned.host_header, pinned.server_hostname) == ("models.example.org:8443", "models.example.org")
    assert pin_url(target, "2606:2800::1").url == "https://[2606:2800::1]:8443/v1"

    plain = check_url("http://[2606:2800::1]/v1", resolver=never)
    assert pin_url(plain, "2606:2800::1") == pin_url(plain, "2606:2800::1", "http://[2606:2800::1]/v1")
    assert pin_url(plain, "2606:2800::1").server_hostname is None  # http, and a literal address: no TLS name
    with pytest.raises(ValueError, match="not a checked address"):
        pin_url(target, "127.0.0.1")
    with pytest.raises(ValueError, match="scheme, host and port"):
        pin_url(target, "93.184.216.34", "https://elsewhere.example.org:8443/v1")
    with pytest.raises(ValueError, match="scheme, host and port"):
        pin_url(target, "93.184.216.34", "http://models.example.org:8443/v1")
