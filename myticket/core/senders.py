"""Who "a sender" is: the key that shares, connection caps and fair batching count by.

By default a sender is the client address of the connection: it cannot be forged over
TCP, where any header can. Behind a proxy every request comes from the proxy's address,
so an operator may name the proxies it trusts (MYTICKET_TRUSTED_PROXIES, networks in CIDR
form): for a request whose connection comes from one of them, and only then, the sender
is the last address of its `X-Forwarded-For` header (the one that trusted proxy added).
An unauthenticated header is never believed by default. No I/O here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The key of a connection whose peer address is unknown (a Unix socket, a closed transport).
UNKNOWN_SENDER = "unknown"


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDR networks (a bare address is a /32 or /128); ValueError names the bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value.strip()!r} is not an address or a network in CIDR form") from None
    return tuple(networks)


def _address(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.strip().split("%", 1)[0])
    except ValueError:
        return None
    # An IPv4 client on a dual-stack socket is the same sender as on an IPv4 one.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(peer: str | None, trusted: Sequence[Network]) -> bool:
    address = _address(peer)
    return address is not None and any(address in network for network in trusted)


def sender_key(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The sender of a request from `peer` carrying these `X-Forwarded-For` headers.

    The header is read only when `peer` is a trusted proxy, and then only its last
    entry: the earlier ones were written by whoever sent the request to that proxy.
    """
    address = _address(peer)
    if address is None:
        return UNKNOWN_SENDER
    if forwarded_for and any(address in network for network in trusted):
        last_hop = _address(forwarded_for[-1].rsplit(",", 1)[-1])
        if last_hop is not None:
            return str(last_hop)
    return str(address)
