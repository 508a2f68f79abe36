# -*- test-case-name: ross.test.integration.test_network -*-
"""
Address management, pure logic: subnets for new networks, addresses for
containers, MAC addresses, published port specs. The manager keeps the
allocated sets (in memory, written through to SQLite); nothing here does
I/O.
"""

from __future__ import annotations

import ipaddress
from typing import Collection, Iterable

from ross.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

# Where automatic subnets come from, as podman: 10.88.0.0/16, 10.89.0.0/16...
AUTO_POOL = ipaddress.IPv4Network("10.88.0.0/13")
AUTO_PREFIX = 16
# The smallest network: room for a gateway and one container.
MAX_PREFIX = 30
PROTOCOLS = ("tcp", "udp", "sctp")


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    """
    An IPv4 subnet in CIDR notation, host bits zero, room for a gateway and
    at least one container (/30 or larger). InvalidArgument otherwise.
    """
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as e:
        raise InvalidArgument(f"invalid subnet {text[:64]!r}: {e}") from None
    if net.prefixlen > MAX_PREFIX:
        raise InvalidArgument(f"invalid subnet {text}: too small, a network needs at least a /30")
    if net.is_loopback or net.is_multicast or net.is_link_local or net.is_unspecified:
        raise InvalidArgument(f"invalid subnet {text}: not a usable unicast range")
    return net


def parse_gateway(text: str, subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """
    A gateway address: a host address of C{subnet}.
    """
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise InvalidArgument(f"invalid gateway {text[:64]!r}: not an IPv4 address") from None
    if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
        raise InvalidArgument(f"invalid gateway {text}: not a host address of subnet {subnet}")
    return address


def overlapping(subnet: ipaddress.IPv4Network,
                others: Iterable[ipaddress.IPv4Network]) -> ipaddress.IPv4Network | None:
    """
    The first of C{others} that overlaps C{subnet}, if any.
    """
    for other in others:
        if subnet.overlaps(other):
            return other
    return None


def choose_subnet(taken: Collection[ipaddress.IPv4Network],
                  pool: ipaddress.IPv4Network = AUTO_POOL, prefix: int = AUTO_PREFIX) -> ipaddress.IPv4Network:
    """
    The first /C{prefix} of C{pool} that overlaps nothing in C{taken} (the
    host's routes and addresses, the other networks).
    """
    for candidate in pool.subnets(new_prefix=prefix):
        if overlapping(candidate, taken) is None:
            return candidate
    raise ResourceExhausted(f"no free subnet left in {pool}: give one with --subnet")


def allocate(subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address,
             used: Collection[ipaddress.IPv4Address], after: ipaddress.IPv4Address | None = None,
             ) -> ipaddress.IPv4Address:
    """
    A free host address of C{subnet}: neither the gateway nor in C{used}.
    The search starts after C{after} (the last one handed out) and wraps,
    as docker's allocator: an address just released is the last to be
    reused, so no peer's ARP cache still points it at a container gone.
    """
    first = int(subnet.network_address) + 1
    last = int(subnet.broadcast_address) - 1
    size = last - first + 1
    start = int(after) + 1 if after is not None and first <= int(after) <= last else first
    for i in range(size):
        candidate = ipaddress.IPv4Address(first + (start - first + i) % size)
        if candidate != gateway and candidate not in used:
            return candidate
    raise ResourceExhausted(f"no available IPv4 addresses on subnet {subnet}")


def static_address(text: str, subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address,
                   used: Collection[ipaddress.IPv4Address]) -> ipaddress.IPv4Address:
    """
    The address asked for with --ip, checked: in the subnet, not the
    gateway, not in use.
    """
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise InvalidArgument(f"invalid IPv4 address: {text[:64]!r}") from None
    if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
        raise InvalidArgument(f"invalid address {address}: it does not belong to the network's subnet {subnet}")
    if address == gateway:
        raise InvalidArgument(f"invalid address {address}: it is the network's gateway")
    if address in used:
        raise FailedPrecondition(f"Address already in use: {address}")
    return address


def mac_of(address: ipaddress.IPv4Address) -> str:
    """
    docker's MAC for an address: 02:42 and the four bytes of the address,
    locally administered and unique on the network as the address is.
    """
    return "02:42:" + ":".join(f"{b:02x}" for b in address.packed)


def parse_port(spec: str) -> tuple[int, str]:
    """
    "80/tcp" -> (80, "tcp"); InvalidArgument for anything else.
    """
    number, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if not number.isdigit() or not 0 < int(number) < 65536 or proto not in PROTOCOLS:
        raise InvalidArgument(f"invalid port specification: {spec[:64]!r}")
    return int(number), proto
