# -*- test-case-name: ross.test.integration.test_network -*-
"""
Container endpoints: their addresses on a network (by the rules of
L{ross.engine.network.ipam}, never one another endpoint holds) and the
names of Ross's devices.
"""

from __future__ import annotations

import ipaddress
from typing import Collection, Iterator, Mapping, MutableMapping

from ross.engine.network import ipam
from ross.engine.network.store import Endpoint, Network, PortMapping
from ross.errors import InvalidArgument


class Allocator:
    """
    Endpoints for containers, recorded in C{endpoints} as they are made.

    @param link_prefix: the start of host-side veth names.
    @param bridge_prefix: the start of user-defined networks' bridge names.
    @param networks: the networks by ID, as the network manager keeps them.
    @param endpoints: the endpoints by (network ID, container ID), likewise:
        what is allocated, and where a new endpoint goes.
    """

    def __init__(self, link_prefix: str, bridge_prefix: str, networks: Mapping[str, Network],
                 endpoints: MutableMapping[tuple[str, str], Endpoint]) -> None:
        self._link_prefix = link_prefix
        self._bridge_prefix = bridge_prefix
        self._networks = networks
        self._endpoints = endpoints
        # Network ID -> the last address handed out there, by IP version.
        self._last: dict[tuple[str, int], ipam.Address] = {}

    def device(self, owner: str, number: int | None = None) -> str:
        """
        The name of a device of Ross's: the host end of interface C{number}
        of container C{owner}, or the bridge of network C{owner}; as much of
        the ID as fits after the prefix.
        """
        if number is None:
            prefix = self._bridge_prefix
            return f"{prefix}{owner[:15 - len(prefix)]}"
        prefix = self._link_prefix
        return f"{prefix}{owner[:13 - len(prefix)]}{number}"

    def allocate(self, network: Network, cid: str, ip: str, number: int, aliases: tuple[str, ...],
                 ports: tuple[PortMapping, ...], mac: str = "", ip6: str = "") -> Endpoint:
        """
        An endpoint of C{cid} on C{network} (with an IPv6 address too on a
        network with IPv6), recorded at once: no await between choosing an
        address and recording it, so two starts never get the same one.
        """
        address = self._address(network, ip, 4)
        address6 = self._address(network, ip6, 6) if network.subnet6 else None
        if ip6 and address6 is None:
            raise InvalidArgument(f"network {network.name} has no IPv6: no IPv6 address can be given on it")
        assert isinstance(address, ipaddress.IPv4Address)
        endpoint = Endpoint(network_id=network.id, container_id=cid, address=str(address),
                            mac=mac.lower() or ipam.mac_of(address), host_link=self.device(cid, number),
                            ifname=f"eth{number}", aliases=aliases, ports=ports,
                            address6=str(address6) if address6 is not None else "")
        self._endpoints[(network.id, cid)] = endpoint
        return endpoint

    def _address(self, network: Network, ip: str, version: int) -> ipam.Address:
        """
        The address of IP C{version} for a new endpoint on C{network}:
        C{ip} when given, checked, else the next free one.
        """
        if ip:
            return static(network, ip, version, self.used(network, version))
        subnet, gateway = _subnet(network, version)
        address = ipam.allocate(subnet, gateway, self.used(network, version), self._last.get((network.id, version)))
        self._last[(network.id, version)] = address
        return address

    def used(self, network: Network, version: int) -> Collection[ipam.Address]:
        """
        The addresses of IP C{version} endpoints hold on C{network}.
        """
        return _Held({e.address if version == 4 else e.address6 for e in self._endpoints.values()
                      if e.network_id == network.id and (version == 4 or e.address6)})


class _Held(Collection[ipam.Address]):
    """
    Addresses by their text as endpoints record it (the canonical form):
    made for each start, so not parsed (with 500 endpoints on a network,
    parsing them all cost each start 10 ms).
    """

    def __init__(self, texts: set[str]) -> None:
        self._texts = texts

    def __contains__(self, address: object) -> bool:
        return str(address) in self._texts

    def __iter__(self) -> Iterator[ipam.Address]:
        return (ipaddress.ip_address(text) for text in self._texts)

    def __len__(self) -> int:
        return len(self._texts)


def _subnet(network: Network, version: int) -> tuple[ipam.Subnet, ipam.Address]:
    """
    The network's subnet and gateway of IP C{version}; InvalidArgument for
    IPv6 on a network without.
    """
    if version == 6 and not network.subnet6:
        raise InvalidArgument(f"network {network.name} has no IPv6: no IPv6 address can be given on it")
    subnet, gateway = (network.subnet, network.gateway) if version == 4 else (network.subnet6, network.gateway6)
    return ipaddress.ip_network(subnet), ipaddress.ip_address(gateway)


def static(network: Network, ip: str, version: int, used: Collection[ipam.Address]) -> ipam.Address:
    """
    Address C{ip} (--ip, --ip6) on C{network}, checked against the
    network's subnet and C{used}.
    """
    subnet, gateway = _subnet(network, version)
    return ipam.static_address(ip, subnet, gateway, used)
