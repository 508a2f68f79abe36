# -*- test-case-name: ross.test.integration.test_network -*-
"""
Address management, pure logic: subnets for new networks, addresses for
containers, MAC addresses, published port specs. The manager keeps the
allocated sets (in memory, written through to SQLite); nothing here does
I/O.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Collection, Iterable, Union

from ross.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

Subnet = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# Where automatic subnets come from, as podman: 10.88.0.0/16, 10.89.0.0/16...
AUTO_POOL = ipaddress.IPv4Network("10.88.0.0/13")
AUTO_PREFIX = 16
# IPv6 subnets chosen for a network: a /64 (what SLAAC and most tools
# expect) of a unique local /48 of the daemon's (RFC 4193), as docker does.
AUTO_PREFIX6 = 64
# The smallest network: room for a gateway and one container (and in IPv4
# the network and broadcast addresses; in IPv6 the subnet-router anycast).
MAX_PREFIX = 30
MAX_PREFIX6 = 126
PROTOCOLS = ("tcp", "udp", "sctp")
_FAMILY = {4: "IPv4", 6: "IPv6"}


def parse_subnet(text: str, version: int = 4) -> Subnet:
    """
    A subnet of IP C{version} (4 or 6) in CIDR notation, host bits zero,
    room for a gateway and at least one container. InvalidArgument
    otherwise.
    """
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise InvalidArgument(f"invalid subnet {text[:64]!r}: {e}") from None
    if net.version != version:
        raise InvalidArgument(f"invalid subnet {text}: not an {_FAMILY[version]} subnet")
    smallest = MAX_PREFIX if version == 4 else MAX_PREFIX6
    if net.prefixlen > smallest:
        raise InvalidArgument(f"invalid subnet {text}: too small, a network needs at least a /{smallest}")
    if net.is_loopback or net.is_multicast or net.is_link_local or net.is_unspecified:
        raise InvalidArgument(f"invalid subnet {text}: not a usable unicast range")
    return net


def _first_last(subnet: Subnet) -> tuple[int, int]:
    """
    The first and last host addresses of C{subnet}, as integers.
    """
    last = int(subnet.broadcast_address) - (1 if subnet.version == 4 else 0)
    return int(subnet.network_address) + 1, last


def _host_of(address: Address, subnet: Subnet) -> bool:
    first, last = _first_last(subnet)
    return address.version == subnet.version and first <= int(address) <= last


def _address(text: str, version: int, what: str) -> Address:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if address is None or address.version != version:
        raise InvalidArgument(f"invalid {what} {text[:64]!r}: not an {_FAMILY[version]} address")
    return address


def parse_gateway(text: str, subnet: Subnet) -> Address:
    """
    A gateway address: a host address of C{subnet}.
    """
    address = _address(text, subnet.version, "gateway")
    if not _host_of(address, subnet):
        raise InvalidArgument(f"invalid gateway {text}: not a host address of subnet {subnet}")
    return address


def overlapping(subnet: Subnet, others: Iterable[Subnet]) -> Subnet | None:
    """
    The first of C{others} (of the same IP version) that overlaps
    C{subnet}, if any.
    """
    for other in others:
        if other.version == subnet.version and subnet.overlaps(other):
            return other
    return None


def choose_subnet(taken: Collection[Subnet], pool: Subnet = AUTO_POOL, prefix: int = AUTO_PREFIX) -> Subnet:
    """
    The first /C{prefix} of C{pool} that overlaps nothing in C{taken} (the
    host's routes and addresses, the other networks).
    """
    for candidate in pool.subnets(new_prefix=prefix):
        if overlapping(candidate, taken) is None:
            return candidate
    raise ResourceExhausted(f"no free subnet left in {pool}: give one with --subnet")


def unique_local_pool(seed: str) -> ipaddress.IPv6Network:
    """
    The daemon's unique local /48 (fd00::/8 and a 40-bit global ID, RFC
    4193), derived from C{seed} (the default network's ID): random to the
    world, the same for the daemon across restarts.
    """
    global_id = hashlib.sha256(seed.encode()).digest()[:5]
    return ipaddress.IPv6Network((b"\xfd" + global_id + bytes(10), 48))


def allocate(subnet: Subnet, gateway: Address, used: Collection[Address], after: Address | None = None) -> Address:
    """
    A free host address of C{subnet}: neither the gateway nor in C{used}.
    The search starts after C{after} (the last one handed out) and wraps,
    as docker's allocator: an address just released is the last to be
    reused, so no peer's neighbour cache still points it at a container
    gone.
    """
    first, last = _first_last(subnet)
    size = last - first + 1
    start = int(after) + 1 if after is not None and first <= int(after) <= last else first
    make = ipaddress.IPv4Address if subnet.version == 4 else ipaddress.IPv6Address
    for i in range(size):
        candidate = make(first + (start - first + i) % size)
        if candidate != gateway and candidate not in used:
            return candidate
    raise ResourceExhausted(f"no available {_FAMILY[subnet.version]} addresses on subnet {subnet}")


def static_address(text: str, subnet: Subnet, gateway: Address, used: Collection[Address]) -> Address:
    """
    The address asked for with --ip or --ip6, checked: in the subnet, not
    the gateway, not in use.
    """
    address = _address(text, subnet.version, "address")
    if not _host_of(address, subnet):
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
