"""The outbound-address guard: where the system may send requests (provider ``base_url``s
now, webhook URLs later), as API.md *Outbound addresses* pins it.

A URL must be http(s) to a public address. Refused: loopback, private (RFC 1918, unique
local), link-local, multicast, unspecified, reserved, shared (100.64/10), documentation and
the other special-purpose ranges (whatever :attr:`ipaddress.IPv4Address.is_global` calls
not global), and the cloud-metadata services (by address and by name). IPv4 addresses
embedded in IPv6 (mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``)
are judged as the IPv4 address they carry; legacy IPv4 spellings that resolvers accept
(``127.1``, ``0x7f000001``, ``2130706433``) are judged as the address they mean.

Two moments (the caller picks with ``resolve``):

- at creation (``resolve=False``): the syntax, and a literal address (names are not looked
  up: DNS answers change, so they are judged when used);
- at request time (``resolve=True``): every address the name resolves to, through an
  injectable ``resolver`` (default :func:`system_resolver`); one forbidden address refuses
  the whole name. The caller then connects to one of the returned addresses
  (:func:`pin_url`), so that a second lookup cannot swap in another one (DNS rebinding).

``allowed_networks`` (CIDRs, e.g. ``AIORCH_PROVIDER_ALLOWED_NETWORKS``) admits addresses in
those networks although they are not public (a LAN model server); ``allow_private=True``
admits every address (development). Metadata addresses and names stay refused in both cases:
no legitimate provider or webhook lives there.

Every refusal is :class:`OutboundRefused`, an :class:`~commands.errors.InvalidCommand`
naming the field.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from commands.errors import FieldError, InvalidCommand

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Iterable[str]]
"""``resolver(host, port) -> addresses`` (strings such as ``"93.184.216.34"``, ``"::1"``);
raises :class:`OSError` (e.g. :class:`socket.gaierror`) when the name does not resolve."""

METADATA_ADDRESSES: frozenset[Address] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ... instance metadata
        "169.254.169.253",  # AWS VPC DNS
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "169.254.170.23",  # AWS EKS pod identity
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
        "100.100.100.200",  # Alibaba Cloud metadata
        "192.0.0.192",  # Oracle Cloud metadata
    )
)
"""Cloud-metadata endpoints: refused even inside ``allowed_networks``."""

METADATA_NAMES: frozenset[str] = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
    }
)
"""Host names of cloud-metadata services: refused at creation and at request time."""

MAX_URL_LENGTH = 2048
"""Longest URL accepted (characters)."""

_SCHEMES = {"http": 80, "https": 443}
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


class OutboundRefused(InvalidCommand):
    """An outbound URL is not allowed: not http(s), malformed, or aimed at a non-public address."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}", fields=[FieldError((field,), reason)])
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class OutboundTarget:
    """A URL that passed :func:`check_url`.

    Attributes:
        url: the URL as given.
        scheme: ``"http"`` or ``"https"``.
        host: the host, normalised (lower case, IDNA ASCII, no trailing dot; an IPv6
            address without brackets; a legacy IPv4 spelling as its dotted quad).
        port: the explicit port, else 80 / 443.
        literal: True when ``host`` is an IP address.
        addresses: the checked addresses: the literal one, or every address the name
            resolved to (``resolve=True``); empty for a name that was not resolved.
    """

    url: str
    scheme: str
    host: str
    port: int
    literal: bool
    addresses: tuple[str, ...]


def system_resolver(host: str, port: int) -> list[str]:
    """Every address of ``host`` (``socket.getaddrinfo``, TCP), in the resolver's order,
    without duplicates. Raises :class:`OSError` when the name does not resolve."""
    seen: dict[str, None] = {}
    for _family, _type, _proto, _canon, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


def parse_networks(networks: Iterable[str | Network]) -> tuple[Network, ...]:
    """CIDRs (``"192.168.1.0/24"``, ``"fd12::/16"``, a bare address for one host; host bits
    are ignored) as network objects.

    Raises:
        ValueError: a value is not a network.
    """
    out: list[Network] = []
    for value in networks:
        if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
            out.append(value)
            continue
        text = str(value).strip()
        if text:
            out.append(ipaddress.ip_network(text, strict=False))
    return tuple(out)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4), or None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def _kind(address: Address) -> str | None:
    """Why ``address`` is not a public unicast address (a short phrase), or None."""
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv6Address) and (address.is_site_local or address.teredo is not None):
        return "a private address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "a non-public address"
    return None


def address_refusal(
    address: str | Address, allowed_networks: Iterable[str | Network] = (), *, allow_private: bool = False
) -> str | None:
    """Why an outbound request may not go to ``address`` (a phrase for an error message),
    or None when it may.

    Metadata addresses are always refused; other non-public addresses unless they lie in
    ``allowed_networks`` or ``allow_private`` is set. An IPv4 address embedded in IPv6 is
    judged as that IPv4 address (and the allowed networks are matched against both).

    Raises:
        ValueError: ``address`` is not an IP address, or a network is not a network.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    candidates: list[Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None and (ip.ipv4_mapped is not None or ip in _NAT64):
            candidates = [embedded]  # ::ffff:a.b.c.d and 64:ff9b::a.b.c.d reach a.b.c.d
        elif embedded is not None:
            candidates.insert(0, embedded)
    if any(c in METADATA_ADDRESSES for c in candidates):
        return f"points to a cloud-metadata address ({ip})"
    if allow_private:
        return None
    networks = parse_networks(allowed_networks)
    for candidate in candidates:
        kind = _kind(candidate)
        if kind is None:
            continue
        if any(candidate.version == net.version and candidate in net for net in networks):
            continue
        shown = f"{candidate} in {ip}" if candidate is not ip else str(ip)
        return f"points to {kind} ({shown}); only public addresses are allowed"
    return None


def _normalise_host(field: str, raw: str) -> tuple[str, Address | None]:
    """``(host, address or None)``: the host in canonical form, and the IP address it
    spells (including legacy IPv4 spellings such as ``127.1`` or ``0x7f000001``)."""
    host = raw.strip().rstrip(".").lower()
    if not host:
        raise OutboundRefused(field, "must name a host")
    try:
        return str(ipaddress.ip_address(host)), ipaddress.ip_address(host)
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fx.]+", host) and host[0].isdigit():
        try:  # what inet_aton (and so getaddrinfo) accepts: 127.1, 0177.0.0.1, 2130706433
            packed = socket.inet_aton(host)
        except OSError:
            packed = None
        if packed is not None:
            legacy = ipaddress.IPv4Address(packed)
            return str(legacy), legacy
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise OutboundRefused(field, "has a host name that is not valid") from None
    if not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*", ascii_host) or len(ascii_host) > 253:
        raise OutboundRefused(field, "has a host name that is not valid")
    return ascii_host, None


def _refuse_name(field: str, host: str, allowed: tuple[Network, ...], allow_private: bool) -> None:
    """Refuse the names that are known without DNS: metadata services and ``localhost``."""
    if host in METADATA_NAMES:
        raise OutboundRefused(field, f"points to a cloud-metadata service ({host})")
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        reason = address_refusal("127.0.0.1", allowed, allow_private=allow_private)
        if reason is not None:
            raise OutboundRefused(field, f"points to {host}, a loopback name; only public addresses are allowed")


def resolve_host(
    host: str,
    port: int,
    *,
    field: str = "base_url",
    allowed_networks: Iterable[str | Network] = (),
    allow_private: bool = False,
    resolver: Resolver | None = None,
) -> tuple[str, ...]:
    """Resolve ``host`` and check every address; return them all (connect to one of them).

    A literal address is checked without a lookup.

    Raises:
        OutboundRefused: any address is forbidden, the resolver answered no address or
            something that is not an address, or ``host`` is a metadata/loopback name.
        OSError: the name does not resolve (a transient failure; the caller may retry).
    """
    allowed = parse_networks(allowed_networks)
    name, literal = _normalise_host(field, host)
    if literal is not None:
        addresses: list[str] = [str(literal)]
    else:
        _refuse_name(field, name, allowed, allow_private)
        addresses = [str(a) for a in (resolver or system_resolver)(name, port)]
        if not addresses:
            raise OutboundRefused(field, f"host {name} resolves to no address")
    for address in addresses:
        try:
            reason = address_refusal(address, allowed, allow_private=allow_private)
        except ValueError:
            raise OutboundRefused(field, f"host {name} resolved to something that is not an address") from None
        if reason is not None:
            what = reason if literal is not None else f"resolves to {reason.removeprefix('points to ')}"
            raise OutboundRefused(field, what)
    return tuple(addresses)


def check_url(
    url: str,
    *,
    field: str = "base_url",
    allowed_networks: Iterable[str | Network] = (),
    allow_private: bool = False,
    resolve: bool = False,
    resolver: Resolver | None = None,
) -> OutboundTarget:
    """Check that ``url`` may receive outbound requests; return it parsed.

    Args:
        url: an absolute http(s) URL without user info (credentials in URLs are refused:
            parsers disagree about ``@`` and ``\\``), spaces or control characters, at most
            :data:`MAX_URL_LENGTH` characters.
        field: the input field a refusal names (``"base_url"``, ``"url"``, ``"webhook"``).
        allowed_networks: CIDRs whose addresses are admitted although not public.
        allow_private: admit every address but the metadata ones (development, tests).
        resolve: also resolve a host name and check every address (request time); else
            only a literal address is checked (creation time).
        resolver: ``resolver(host, port) -> addresses``; default :func:`system_resolver`.

    Raises:
        OutboundRefused: the URL is refused (naming ``field``).
        OSError: ``resolve=True`` and the name does not resolve.
        ValueError: an allowed network is not a network.
    """
    if not isinstance(url, str) or not url.strip():
        raise OutboundRefused(field, "must be an http(s) URL")
    if len(url) > MAX_URL_LENGTH:
        raise OutboundRefused(field, f"must be at most {MAX_URL_LENGTH} characters")
    if _UNSAFE_CHARS.search(url):
        raise OutboundRefused(field, "must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
        raw_host = parts.hostname
    except ValueError:
        raise OutboundRefused(field, "is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise OutboundRefused(field, "must be an http(s) URL")
    if "@" in parts.netloc:
        raise OutboundRefused(field, "must not carry user info (user:password@); give credentials separately")
    if not raw_host:
        raise OutboundRefused(field, "must name a host")
    if port == 0:
        raise OutboundRefused(field, "has an invalid port")
    allowed = parse_networks(allowed_networks)
    host, literal = _normalise_host(field, raw_host)
    port = port or _SCHEMES[scheme]
    if literal is not None or resolve:
        addresses = resolve_host(
            host, port, field=field, allowed_networks=allowed, allow_private=allow_private, resolver=resolver
        )
    else:
        _refuse_name(field, host, allowed, allow_private)
        addresses = ()
    return OutboundTarget(url=url, scheme=scheme, host=host, port=port, literal=literal is not None, addresses=addresses)


@dataclass(frozen=True)
class PinnedRequest:
    """How to send a request to a checked address while speaking to the host by name.

    Attributes:
        url: the URL with its host replaced by the address (``http://93.184.216.34:8080/v1/x``).
        host_header: the ``Host`` header: the host as checked, with the port when explicit.
        server_hostname: the TLS server name (SNI, and the name the certificate must carry)
            for https to a host name; None for http or a literal address.
    """

    url: str
    host_header: str
    server_hostname: str | None


def pin_url(target: OutboundTarget, address: str, url: str | None = None) -> PinnedRequest:
    """Pin a request for ``target`` (or for ``url``, a URL on the same scheme, host and port,
    such as ``base_url`` + an endpoint) to ``address``, one of ``target.addresses``.

    With httpx: ``client.build_request(method, p.url, headers={"Host": p.host_header},
    extensions={"sni_hostname": p.server_hostname} if p.server_hostname else {})``; no
    environment proxy (``trust_env=False``) and no redirects.

    Raises:
        ValueError: ``address`` is not one of the checked addresses, or ``url`` is not on
            the target's scheme, host and port.
    """
    if address not in target.addresses:
        raise ValueError(f"{address} is not a checked address of {target.host}")
    parts = urlsplit(url if url is not None else target.url)
    same_port = (parts.port or _SCHEMES.get(parts.scheme.lower(), 0)) == target.port
    if parts.scheme.lower() != target.scheme or not same_port or _normalise_host("url", parts.hostname or "")[0] != target.host:
        raise ValueError("the URL is not on the checked target's scheme, host and port")
    explicit_port = parts.port is not None

    def netloc(host: str) -> str:
        shown = f"[{host}]" if ":" in host else host
        return f"{shown}:{target.port}" if explicit_port else shown

    pinned = urlunsplit((target.scheme, netloc(address), parts.path, parts.query, ""))
    server_name = target.host if target.scheme == "https" and not target.literal else None
    return PinnedRequest(url=pinned, host_header=netloc(target.host), server_hostname=server_name)
